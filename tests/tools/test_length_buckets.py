"""Encoder buckets: every row once, lengths within the slack, sizes within the cap, the input's order restored."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from tools.length_buckets import EXTRA, SLACK, encode_in_buckets, length_buckets


@pytest.mark.parametrize("seed", range(20))
def test_every_row_lands_in_one_bucket_of_similar_lengths(seed: int) -> None:
    rng = np.random.default_rng(seed)
    lengths = np.concatenate([rng.integers(2, 40, 300), rng.integers(100, 129, 20)])
    rng.shuffle(lengths)
    cap = int(rng.integers(1, 70))
    buckets = length_buckets(lengths.tolist(), cap)
    rows = np.concatenate(buckets)
    assert sorted(rows.tolist()) == list(range(lengths.size))  # each row exactly once
    for bucket in buckets:
        sizes = lengths[bucket]
        assert 1 <= bucket.size <= cap
        assert np.all(np.diff(sizes) >= 0)
        assert sizes.max() <= SLACK * sizes.min() + EXTRA
    # greedy and maximal: a bucket closed early only because the next row was too long or it was full
    for left, right in itertools.pairwise(buckets):
        assert left.size == cap or lengths[right[0]] > SLACK * lengths[left[0]] + EXTRA


def test_padding_is_a_fraction_of_fixed_batches_on_mixed_lengths() -> None:
    rng = np.random.default_rng(0)
    lengths = np.where(rng.random(600) < 0.9, rng.integers(8, 30, 600), 128)
    padded = sum(int(lengths[b].max()) * b.size for b in length_buckets(lengths.tolist(), 64))
    fixed = sum(int(lengths[i:i + 30].max()) * lengths[i:i + 30].size for i in range(0, 600, 30))
    assert padded < 0.5 * fixed  # a fixed batch of 30 nearly always holds one 128-token text


def test_encode_in_buckets_restores_the_input_order() -> None:
    lengths = [5, 50, 3, 120, 7, 60, 3]
    calls: list[list[int]] = []

    def encode(rows: list[int]) -> np.ndarray:
        calls.append(rows)
        return np.asarray([[float(r), float(lengths[r])] for r in rows], dtype=np.float32)

    out = encode_in_buckets(lengths, 2, encode)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out[:, 0], np.arange(len(lengths)))
    np.testing.assert_array_equal(out[:, 1], lengths)
    assert all(len(rows) <= 2 for rows in calls) and sum(len(r) for r in calls) == len(lengths)


def test_a_cap_below_one_is_refused() -> None:
    with pytest.raises(ValueError, match="max_size"):
        length_buckets([3, 4], 0)
