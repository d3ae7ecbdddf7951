"""Retrieval: the k nearest human-labeled examples vote, weighted by cosine similarity.

Vectors are the shared hashed word features (:func:`tools.features.text_features` without char
n-grams), IDF-weighted over the index. A query batch is one sparse matrix product against the
transposed index plus a vectorised top-k, so 256 queries against 100k examples take tens of ms.
Terms found in more than ``max(2,000, 5%)`` of the examples are ignored (stop words): that bounds
the work per query at scale; exact duplicates (same normalised text) are always found, with
similarity 1, through a hash lookup.

Vote: each neighbour with similarity ``s >= min_similarity`` adds ``s / (1 - s + 0.01)`` to its
label (an exact duplicate weighs 100, a neighbour at 0.5 about 1, at 0.3 about 0.4); a pseudo-count
of 0.25 is spread uniformly over the labels. So a duplicate gives ~0.999, a few weak or mixed
neighbours a soft vote, none an abstain.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from policies.exceptions import ToolError
from policies.model import RetrievalSpec
from tools.base import Batch, ModelInfo, ToolContext, TrainingSet, Votes
from tools.features import column_map, idf_weights, reweight, text_features
from tools.labels import label_positions, training_labels

STOP_FRACTION = 0.05
STOP_MIN_POSTINGS = 2000
DUPLICATE_EPS = 0.01  # weight of a neighbour = s / (1 - s + eps)
PSEUDO_COUNT = 0.25
SHOWN_NEIGHBOURS = 3
SNIPPET_CHARS = 60
# i18: the index never holds more examples (the most recent ones). A query's work grows with the index: a common term's
# postings are scanned up to STOP_MIN_POSTINGS long, so the cap, not the stream's length, bounds it. Smaller than the
# learner's training window (agent.schedule.TRAINING_CAP), which only the classifier's fits pay for.
MAX_EXAMPLES = 8_192


def normalised_text(text: str | None) -> str:
    return " ".join((text or "").lower().split())


@dataclass(slots=True, frozen=True)
class _Index:
    version: str
    raw: sp.csr_matrix  # unweighted L2-normalised features, one row per example
    df: np.ndarray  # document frequency of each hashed column
    column_map: np.ndarray  # hashed column -> index column (-1: unused or a stop term)
    idf: np.ndarray
    index_t: sp.csr_matrix  # weighted, transposed: (n_columns, n_examples)
    keys: tuple[str, ...]
    labels: np.ndarray  # per example: index into the tool's labels
    snippets: tuple[str, ...]
    row_of_key: dict[str, int]
    rows_of_text: dict[str, tuple[int, ...]]

    def __len__(self) -> int:
        return len(self.keys)


class Retrieval:
    """Tool + Learnable. Construct from the spec and the project's labels."""

    kind = "retrieval"

    def __init__(self, spec: RetrievalSpec, labels: tuple[str, ...] | list[str], *,
                 max_examples: int = MAX_EXAMPLES) -> None:
        if spec.embedding != "hashed_tfidf":
            raise ToolError(
                f"tool {spec.name!r}: embedding {spec.embedding!r} needs sentence-embedding weights that are not "
                "installed in this deployment; use embedding: hashed_tfidf"
            )
        self.spec = spec
        self.name = spec.name
        self.cost = spec.cost
        self.labels = tuple(labels)
        self._index: _Index | None = None
        self._fit_lock = threading.Lock()
        self._fits = 0
        self.max_examples = max_examples

    @property
    def version(self) -> str:
        index = self._index
        return index.version if index is not None else f"{self.name}-v0"

    @property
    def size(self) -> int:
        index = self._index
        return len(index) if index is not None else 0

    def fork(self) -> Retrieval:
        """An untrained copy with the same settings (for cross-fitting: no knowledge leaks into it)."""
        return type(self)(self.spec, self.labels, max_examples=self.max_examples)

    @property
    def index(self) -> _Index | None:
        """The current examples (one read: a concurrent ``fit`` swaps the whole index at once)."""
        return self._index

    def prepare(self, batch: Batch) -> None:
        """Compute and cache the features for the whole batch at once (see ``TextClassifier.prepare``)."""
        self._features(batch)

    # --- predict ----------------------------------------------------------------------------------

    async def predict(self, batch: Batch, context: ToolContext) -> Votes:
        index = self._index  # one read: a concurrent fit cannot mix two indexes
        labels = context.labels
        n = len(batch)
        if index is None or len(index) == 0:
            return Votes.abstaining(self.name, n, len(labels), f"{self.name}: no labeled examples yet")
        rows, cols, sims = self.neighbours(batch, index)
        example_labels = label_positions(self.labels, labels)[index.labels]
        known = example_labels[cols] >= 0
        weights = np.clip(sims, 0.0, 1.0)
        weights = weights / (1.0 - weights + DUPLICATE_EPS)
        mass = np.zeros((n, len(labels)))
        np.add.at(mass, (rows[known], example_labels[cols[known]]), weights[known])
        total = mass.sum(axis=1)
        abstain = total == 0
        probs = (mass + PSEUDO_COUNT / len(labels)) / (total + PSEUDO_COUNT)[:, None]
        probs[abstain] = 1.0 / len(labels)
        evidence = self._evidence(index, labels, probs, abstain, rows, cols, sims, n)
        return Votes(self.name, probs, abstain, np.full(n, self.cost, dtype=np.float64), evidence, index.version)

    def neighbours(self, batch: Batch, index: _Index | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Up to k neighbours per item with similarity >= min_similarity, as (row, example, similarity)
        arrays sorted by row then decreasing similarity. ``example`` indexes the index's examples."""
        index = index if index is not None else self._index
        if index is None or len(index) == 0 or len(batch) == 0:
            empty = np.zeros(0, dtype=np.int64)
            return empty, empty, np.zeros(0, dtype=np.float32)
        q = reweight(self._features(batch), index.column_map, index.idf)
        s = q @ index.index_t
        row = np.repeat(np.arange(len(batch)), np.diff(s.indptr))
        keep = s.data >= self.spec.min_similarity
        row, col, sim = row[keep], s.indices[keep].astype(np.int64), s.data[keep]
        by_text = index.rows_of_text
        dups = [(i, j) for i, item in enumerate(batch.items) for j in by_text.get(normalised_text(item.text), ())]
        if dups:
            dup = np.array(dups, dtype=np.int64)
            row = np.concatenate([dup[:, 0], row])
            col = np.concatenate([dup[:, 1], col])
            sim = np.concatenate([np.ones(len(dup), dtype=np.float32), sim])
            _, first = np.unique(row * len(index) + col, return_index=True)  # the duplicate entry comes first
            row, col, sim = row[first], col[first], sim[first]
        order = np.lexsort((-sim, row))
        row, col, sim = row[order], col[order], sim[order]
        if len(row):
            starts = np.ones(len(row), dtype=bool)
            starts[1:] = row[1:] != row[:-1]
            rank = np.arange(len(row)) - np.maximum.accumulate(np.where(starts, np.arange(len(row)), 0))
            top = rank < self.spec.k
            row, col, sim = row[top], col[top], sim[top]
        return row, col, np.minimum(sim, 1.0)

    def _features(self, batch: Batch) -> sp.csr_matrix:
        return text_features(batch, self.spec.n_features, char_ngrams=False)

    def _evidence(self, index: _Index, labels: tuple[str, ...], probs: np.ndarray, abstain: np.ndarray,
                  rows: np.ndarray, cols: np.ndarray, sims: np.ndarray, n: int) -> list[str]:
        counts = np.bincount(rows, minlength=n)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        best = probs.argmax(axis=1)
        p_best = probs[np.arange(n), best].tolist()
        out = []
        for i in range(n):
            if abstain[i]:
                out.append(f"{index.version}: no labeled example with similarity >= {self.spec.min_similarity:.2f}")
                continue
            shown = []
            for j in range(starts[i], starts[i] + min(counts[i], SHOWN_NEIGHBOURS)):
                e = cols[j]
                shown.append(f'{index.keys[e]} {self.labels[index.labels[e]]} {sims[j]:.2f} "{index.snippets[e]}"')
            plural = "s" if counts[i] != 1 else ""
            out.append(f"{index.version}: {labels[best[i]]} {p_best[i]:.2f} from {counts[i]} neighbour{plural}; "
                       + " | ".join(shown))
        return out

    # --- fit --------------------------------------------------------------------------------------

    def fit(self, data: TrainingSet) -> ModelInfo:
        """Add new ground truth to the index (existing keys get their latest label) and swap it in.

        i18: the index holds at most ``max_examples`` examples. When adding would pass that, it is rebuilt from
        ``data`` alone (its last ``max_examples`` distinct keys): examples the caller no longer trains on leave
        the index, so its memory and the work per query stay bounded however long the stream runs.
        """
        with self._fit_lock:
            start = time.perf_counter()
            rows, y = training_labels(data, self.labels)
            old = self._index
            new_rows, new_labels, labels, row_of_key = self._merge(old, data, rows, y)
            if old is not None and len(old) + len(new_rows) > self.max_examples:
                old = None  # rebuilt from the training set alone
                new_rows, new_labels, labels, row_of_key = self._merge(None, data, rows, y)
                new_rows, new_labels = new_rows[-self.max_examples:], new_labels[-self.max_examples:]
            elif old is not None and not new_rows and np.array_equal(labels, old.labels):
                return ModelInfo(self.name, old.version, len(old), {"added": 0.0})
            index = self._build(old, data.batch, new_rows, np.asarray(new_labels, dtype=np.int64), labels, row_of_key)
            self._index = index  # the atomic swap
            metrics = {"added": float(len(new_rows)), "columns": float(len(index.idf)),
                       "fit_seconds": time.perf_counter() - start}
            return ModelInfo(self.name, index.version, len(index), metrics)

    @staticmethod
    def _merge(old: _Index | None, data: TrainingSet, rows: np.ndarray,
               y: np.ndarray) -> tuple[list[int], list[int], np.ndarray, dict[str, int]]:
        """(rows of ``data`` with keys new to ``old``, their labels, ``old``'s labels updated, key -> index row)."""
        row_of_key = dict(old.row_of_key) if old is not None else {}
        labels = old.labels.copy() if old is not None else np.zeros(0, dtype=np.int64)
        new_rows: list[int] = []
        new_labels: list[int] = []
        fresh: dict[str, int] = {}
        for r, label in zip(rows.tolist(), y.tolist(), strict=True):
            key = data.batch.items[r].key
            if key in row_of_key:
                labels[row_of_key[key]] = label
            elif key in fresh:  # the same key twice in one training set: the last label wins
                new_labels[fresh[key]] = label
            else:
                fresh[key] = len(new_rows)
                new_rows.append(r)
                new_labels.append(label)
        return new_rows, new_labels, labels, row_of_key

    def _build(self, old: _Index | None, batch: Batch, new_rows: list[int], new_labels: np.ndarray,
               labels: np.ndarray, row_of_key: dict[str, int]) -> _Index:
        n_features = self.spec.n_features
        if new_rows:
            sub = batch.subset(new_rows) if len(new_rows) != len(batch) else batch
            added = sp.csr_matrix(self._features(sub), dtype=np.float32, copy=True)
            items = sub.items
        else:
            added = sp.csr_matrix((0, n_features), dtype=np.float32)
            items = []
        if old is None:
            raw, df = added, np.zeros(n_features, dtype=np.int32)
            keys: tuple[str, ...] = ()
            snippets: tuple[str, ...] = ()
            rows_of_text: dict[str, tuple[int, ...]] = {}
        else:
            raw = sp.vstack([old.raw, added], format="csr", dtype=np.float32) if len(items) else old.raw
            df, keys, snippets, rows_of_text = old.df.copy(), old.keys, old.snippets, dict(old.rows_of_text)
        np.add.at(df, added.indices, 1)  # the few added rows' columns (a bincount would sweep every column twice)
        base = len(keys)
        for offset, item in enumerate(items):
            row_of_key[item.key] = base + offset
            text = normalised_text(item.text)
            if text:
                rows_of_text[text] = (*rows_of_text.get(text, ()), base + offset)
        keys = keys + tuple(item.key for item in items)
        snippets = snippets + tuple(_snippet(item.text) for item in items)
        labels = np.concatenate([labels, new_labels])
        n = len(keys)
        cap = max(STOP_MIN_POSTINGS, STOP_FRACTION * n)
        used = np.flatnonzero(df)
        cols = used[df[used] <= cap]
        col_map = column_map(n_features, cols)
        idf = idf_weights(n, df[cols])
        index_t = reweight(raw, col_map, idf).T.tocsr()
        self._fits += 1
        return _Index(f"{self.name}-v{self._fits}", raw, df, col_map, idf, index_t, keys, labels, snippets,
                      row_of_key, rows_of_text)


def _snippet(text: str | None) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= SNIPPET_CHARS else flat[: SNIPPET_CHARS - 1] + "…"
