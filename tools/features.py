"""Fast text features with no model download: hashed, sublinear-tf, L2-normalised n-gram vectors.

Rows are L2-normalised, so a dot product of two rows is their cosine similarity. Features are
computed once per batch through :meth:`Batch.cached` (the cached functions depend on the items
only, as ``Batch`` requires) and shared by every tool: the classifier and retrieval use the same
word part; the character part is only computed when a tool asks for it. Nothing here depends on
training data, so the cached matrices stay valid across retrains; tools that want IDF weighting
apply it on top (see :func:`idf_weights` and :func:`reweight`).
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction.text import HashingVectorizer

from tools.base import Batch, Item

# Currency amounts ("£100", "$ 5.99"), numbers ("87121", "1.50") and words with inner apostrophes.
# Single characters are kept ("u", "2"): they carry signal in short messages.
WORD_TOKEN_PATTERN = r"(?u)[£$€]\s?\d+(?:[.,]\d+)*|\d+(?:[.,]\d+)*|\w+(?:['’]\w+)*"

CHAR_NGRAMS = (2, 4)
WORD_NGRAMS = (1, 2)


def word_vectorizer(n_features: int, ngram_range: tuple[int, int] = WORD_NGRAMS) -> HashingVectorizer:
    return HashingVectorizer(
        n_features=n_features, alternate_sign=False, norm=None, lowercase=True, dtype=np.float32,
        token_pattern=WORD_TOKEN_PATTERN, ngram_range=ngram_range,
    )


def char_vectorizer(n_features: int) -> HashingVectorizer:
    return HashingVectorizer(
        n_features=n_features, alternate_sign=False, norm=None, lowercase=True, dtype=np.float32,
        analyzer="char_wb", ngram_range=CHAR_NGRAMS,
    )


def _texts(items: list[Item]) -> list[str]:
    return [item.text or "" for item in items]


def _sublinear(x: sp.csr_matrix) -> sp.csr_matrix:
    """tf -> 1 + ln(tf), in place."""
    np.log(x.data, out=x.data)
    x.data += 1.0
    return x


def row_sums(values: np.ndarray, indptr: np.ndarray) -> np.ndarray:
    """Per-row sums of CSR-aligned ``values`` (empty rows give 0)."""
    counts = np.diff(indptr)
    out = np.zeros(len(counts), dtype=values.dtype if values.dtype.kind == "f" else np.int64)
    nonempty = counts > 0
    if nonempty.any():
        out[nonempty] = np.add.reduceat(values, indptr[:-1][nonempty])
    return out


def l2_normalize(x: sp.csr_matrix) -> sp.csr_matrix:
    """Scale the rows of a CSR matrix to unit L2 norm, in place (all-zero rows stay zero)."""
    norms = np.sqrt(row_sums(x.data * x.data, x.indptr))
    norms[norms == 0] = 1.0
    x.data /= np.repeat(norms, np.diff(x.indptr)).astype(x.data.dtype, copy=False)
    return x


def word_features(batch: Batch, n_features: int) -> sp.csr_matrix:
    """L2-normalised sublinear tf of word 1-2 grams, cached per batch under ``hashed_words:{n_features}``."""
    return batch.cached(
        f"hashed_words:{n_features}",
        lambda items: l2_normalize(_sublinear(word_vectorizer(n_features).transform(_texts(items)))),
    )


def char_features(batch: Batch, n_features: int) -> sp.csr_matrix:
    """L2-normalised sublinear tf of char_wb 2-4 grams, cached per batch under ``hashed_chars:{n_features}``."""
    return batch.cached(
        f"hashed_chars:{n_features}",
        lambda items: l2_normalize(_sublinear(char_vectorizer(n_features).transform(_texts(items)))),
    )


def text_features(batch: Batch, n_features: int = 2**18, char_ngrams: bool = True) -> sp.csr_matrix:
    """Hashed n-gram features of the batch's texts: CSR, float32, one L2-normalised row per item.

    Word 1-2 grams (lowercased, see :data:`WORD_TOKEN_PATTERN`) and, with ``char_ngrams``, char_wb
    2-4 grams hashed into the same space, the two parts weighted equally (so the ~5x more numerous
    char n-grams do not drown the words). The word and char parts are computed once per batch
    (``Batch.cached``, keyed by kind and width) and shared by every tool; mixing them is a cheap
    sparse sum. Callers must not modify the returned matrix.
    """
    words = word_features(batch, n_features)
    if not char_ngrams:
        return words
    return l2_normalize(sp.csr_matrix(words + char_features(batch, n_features), dtype=np.float32))


def idf_weights(n_docs: int, doc_freq: np.ndarray) -> np.ndarray:
    """Smoothed inverse document frequency, as in scikit-learn: ln((1 + n) / (1 + df)) + 1."""
    return (np.log((1.0 + n_docs) / (1.0 + doc_freq)) + 1.0).astype(np.float32)


def reweight(x: sp.csr_matrix, column_map: np.ndarray, weights: np.ndarray) -> sp.csr_matrix:
    """Select and reweight columns: column ``j`` of ``x`` becomes column ``column_map[j]`` (dropped if
    negative) multiplied by ``weights[column_map[j]]``; rows are L2-normalised again. Returns a new
    CSR matrix with ``len(weights)`` columns; ``x`` is not modified.
    """
    new_idx = column_map[x.indices]
    keep = new_idx >= 0
    row_counts = row_sums(keep.astype(np.int64), x.indptr)
    indptr = np.zeros(x.shape[0] + 1, dtype=np.int64)
    np.cumsum(row_counts, out=indptr[1:])
    idx = new_idx[keep]
    data = x.data[keep] * weights[idx]
    out = sp.csr_matrix((data.astype(np.float32, copy=False), idx, indptr), shape=(x.shape[0], len(weights)))
    return l2_normalize(out)
