"""Hashed n-gram features: shape, normalisation, sharing through the batch cache, speed."""

from __future__ import annotations

import time

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import HashingVectorizer

from tests.tools.helpers import items_of
from tools.base import Batch, Item
from tools.features import (
    char_wb_counts,
    idf_weights,
    l2_normalize,
    reweight,
    text_features,
    word_vectorizer,
)


def test_rows_are_unit_float32_and_empty_text_is_zero() -> None:
    batch = Batch([Item("a", "Free entry! Text WIN to 87121"), Item("b", ""), Item("c", None), Item("d", "ok")])
    for char_ngrams in (False, True):
        x = text_features(batch, 2**12, char_ngrams)
        assert sp.isspmatrix_csr(x) and x.dtype == np.float32 and x.shape == (4, 2**12)
        norms = np.sqrt(np.asarray(x.multiply(x).sum(axis=1)).ravel())
        np.testing.assert_allclose(norms, [1.0, 0.0, 0.0, 1.0], atol=1e-6)


def test_identical_texts_have_cosine_one_and_case_is_ignored() -> None:
    x = text_features(Batch([Item("a", "Call NOW to claim"), Item("b", "call now to claim"), Item("c", "hi mum")]),
                      2**18, True)
    sims = (x @ x.T).toarray()
    assert abs(sims[0, 1] - 1.0) < 1e-5
    assert sims[0, 2] < 0.3


def test_token_pattern_keeps_currency_numbers_and_short_words() -> None:
    analyzer = word_vectorizer(2**10, (1, 1)).build_analyzer()
    tokens = analyzer("WIN £100 now! txt 87121, u r a winner £1.50 don't")
    for token in ("£100", "87121", "txt", "u", "£1.50", "don't"):
        assert token in tokens


def test_parts_are_cached_once_per_batch_and_shared() -> None:
    batch = Batch([Item(str(i), f"message {i} about a prize") for i in range(5)])
    words = text_features(batch, 2**14, False)
    assert text_features(batch, 2**14, False) is words  # cached, not recomputed
    assert set(batch._cache) == {"hashed_words:16384"}
    mixed = text_features(batch, 2**14, True)
    assert mixed.nnz > words.nnz
    assert set(batch._cache) == {"hashed_words:16384", "hashed_text:16384"}  # the char part is only in the mix
    assert text_features(batch, 2**14, False) is words  # the word part was reused, not recomputed
    assert text_features(batch, 2**14, True) is mixed  # and so is the mix
    other = text_features(batch, 2**13, False)
    assert other.shape[1] == 2**13 and "hashed_words:8192" in batch._cache


def test_concatenated_batches_compute_missing_features_per_part() -> None:
    items = [Item(str(i), f"text number {i} with words") for i in range(9)]
    seen, fresh, late = Batch(items[:4]), Batch(items[4:5]), Batch(items[5:])
    text_features(seen, 2**12, True)  # decision-time features exist for the first part only
    both = Batch.concat([seen.subset([0, 1, 2, 3]), fresh, late])
    expected = text_features(Batch(items), 2**12, True).toarray()
    for char_ngrams in (True, False):
        x = text_features(both, 2**12, char_ngrams)
        assert x.shape[0] == len(items)
    np.testing.assert_allclose(text_features(both, 2**12, True).toarray(), expected, atol=1e-6)


def test_subset_keeps_features_aligned() -> None:
    batch = Batch([Item(str(i), f"text number {i}") for i in range(6)])
    x = text_features(batch, 2**12, True)
    sub = batch.subset([4, 1])
    np.testing.assert_array_equal(text_features(sub, 2**12, True).toarray(), x[[4, 1]].toarray())


def test_reweight_selects_columns_weights_and_renormalises() -> None:
    x = sp.csr_matrix(np.array([[0.6, 0.8, 0.0], [0.0, 0.0, 1.0], [0.0, 0.0, 0.0]], dtype=np.float32))
    column_map = np.array([0, -1, 1])  # drop column 1
    out = reweight(x, column_map, np.array([2.0, 3.0], dtype=np.float32))
    np.testing.assert_allclose(out.toarray(), [[1.0, 0.0], [0.0, 1.0], [0.0, 0.0]], atol=1e-6)
    assert x[0, 1] == np.float32(0.8)  # input untouched


def test_idf_is_smoothed_and_decreasing() -> None:
    idf = idf_weights(100, np.array([1, 10, 100]))
    assert idf[0] > idf[1] > idf[2] >= 1.0


def test_l2_normalize_handles_trailing_empty_rows() -> None:
    x = sp.csr_matrix(np.array([[3.0, 4.0], [0.0, 0.0]], dtype=np.float32))
    np.testing.assert_allclose(l2_normalize(x).toarray(), [[0.6, 0.8], [0.0, 0.0]], atol=1e-6)


def test_char_ngrams_are_those_of_sklearn_char_wb(sms_rows: list[dict[str, str]]) -> None:
    texts = [r["text"] for r in sms_rows[:500]] + ["", "a", "A b", "x\x00y", "tab\tsep\nnew  line", "emoji 😀 ok",
                                                   "\u00a0nbsp\u2003em", "ab"]
    ours = char_wb_counts(texts, 2**18)
    reference = HashingVectorizer(n_features=2**18, analyzer="char_wb", ngram_range=(2, 4), alternate_sign=False,
                                  norm=None).transform(texts)
    # same n-grams per text (the hash function differs, so compare counts, not columns)
    np.testing.assert_array_equal(np.asarray(ours.sum(axis=1)).ravel(), np.asarray(reference.sum(axis=1)).ravel())
    assert abs(ours.nnz - reference.nnz) < 0.001 * reference.nnz  # collisions only
    same = char_wb_counts(["Hello  World", "hello world", "world hello"], 2**18).toarray()
    assert (same[0] == same[1]).all() and (same[0] == same[2]).all()  # bag of n-grams, within words


def test_lone_surrogates_do_not_break_featurisation() -> None:
    x = text_features(Batch([Item("a", "bad \ud800 text"), Item("b", "fine")]), 2**12, True)
    assert x.shape == (2, 2**12) and x.nnz > 0


def test_word_features_are_fast_on_sms(sms_rows: list[dict[str, str]]) -> None:
    items = items_of(sms_rows)
    start = time.perf_counter()
    x = text_features(Batch(items), 2**18, False)
    elapsed = time.perf_counter() - start
    assert x.shape[0] == len(items)
    # measured ~75,000 texts/s on 2 loaded cores; fail only on a gross regression
    assert len(items) / elapsed > 8_000, f"{len(items) / elapsed:.0f} texts/s"
    start = time.perf_counter()
    text_features(Batch(items), 2**18, True)
    elapsed = time.perf_counter() - start
    assert len(items) / elapsed > 4_000, f"{len(items) / elapsed:.0f} texts/s"  # measured ~30,000 with char n-grams


def test_the_mix_of_a_subset_or_concatenation_equals_the_rows_of_the_mix() -> None:
    items = [Item(str(i), f"Message {i}: WIN a prize, txt {i * 7} now" * (1 + i % 3)) for i in range(12)]
    whole = text_features(Batch(items), 2**12, True)
    first, second = Batch(items[:5]), Batch(items[5:])
    text_features(first, 2**12, True)  # one part carries the mix, the other is computed when concatenated
    joined = text_features(Batch.concat([first, second]), 2**12, True)
    picked = text_features(Batch(items).subset([7, 2, 11]), 2**12, True)
    for got, rows in ((joined, range(12)), (picked, [7, 2, 11])):
        want = whole[list(rows)]
        assert (got.indptr == want.indptr).all() and (got.indices == want.indices).all()
        assert (got.data == want.data).all()  # bit for bit: the mix is row-wise
