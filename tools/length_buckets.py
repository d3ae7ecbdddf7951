"""Encoder batches of texts of similar token length: little padding, whatever the caller's batch.

A transformer encoder pads every text of a batch to the batch's longest, and pays for the padding. The planner
hands the encoder the few items each graph run leaves open (tens of texts of any length), so a fixed-size batch
of them is mostly padding on a stream of short messages with some long ones: measured on sms_spam texts in
calls of 30 (2-core AVX-512 CPU), the int8 ONNX encoder did 191 texts/s with fixed batches and 483 with length
buckets, the torch encoder 97 and 170 (DESIGN-NOTES 13). A bucket is a run of the texts sorted by token length
that stays within ``SLACK`` times its shortest text (plus ``EXTRA`` tokens: very short texts cost little
anyway) and within ``max_size`` texts.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np

SLACK = 1.5  # a bucket's longest text is at most this many times its shortest ...
EXTRA = 4  # ... plus this many tokens


def length_buckets(lengths: Sequence[int] | np.ndarray, max_size: int) -> list[np.ndarray]:
    """Row indices grouped into buckets of similar ``lengths``, each sorted by length and at most ``max_size``.

    Every row is in exactly one bucket. Greedy over the rows sorted by length (stable: equal lengths keep the
    input's order): a bucket closes when the next row is longer than ``SLACK * shortest + EXTRA`` or it is full.
    """
    if max_size < 1:
        raise ValueError(f"max_size must be at least 1, got {max_size}")
    sizes = np.asarray(lengths, dtype=np.int64)
    order = np.argsort(sizes, kind="stable")
    buckets: list[np.ndarray] = []
    start = 0
    while start < order.size:
        limit = SLACK * sizes[order[start]] + EXTRA
        # the first row past the length limit, at most max_size rows on: sizes along ``order`` are sorted
        stop = start + int(np.searchsorted(sizes[order[start:start + max_size]], limit, side="right"))
        buckets.append(order[start:max(stop, start + 1)])
        start = max(stop, start + 1)
    return buckets


def encode_in_buckets(lengths: Sequence[int], max_size: int,
                      encode: Callable[[list[int]], np.ndarray]) -> np.ndarray:
    """``(len(lengths), d)`` float32 rows in the input's order, ``encode(rows)`` called once per bucket."""
    out = np.zeros((len(lengths), 0), dtype=np.float32)
    for rows in length_buckets(lengths, max_size):
        vectors = encode(rows.tolist())
        if out.shape[1] == 0:
            out = np.zeros((len(lengths), vectors.shape[1]), dtype=np.float32)
        out[rows] = vectors
    return out
