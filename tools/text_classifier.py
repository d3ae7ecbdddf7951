"""Learned text classifier: multinomial logistic regression on hashed n-grams (+ numeric metadata).

``fit`` builds a new immutable :class:`_Model` and swaps one reference at the end, so a ``predict``
running concurrently (it reads the reference once) always uses one whole model. Features come from
:func:`tools.features.text_features` (shared per batch with retrieval); the model selects the
columns seen in training (dropping singletons once there is enough data), weights them by IDF and
re-normalises. Classes never seen in training get the probability ``1 / (n_train + n_labels)``
each, so the vote always covers the project's whole label set.
"""

from __future__ import annotations

import re
import threading
import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from sklearn.feature_extraction import FeatureHasher

from policies.model import TextClassifierSpec
from tools.base import Batch, ModelInfo, ToolContext, TrainingSet, Votes
from tools.features import WORD_TOKEN_PATTERN, column_map, idf_weights, reweight, text_features
from tools.labels import label_positions, not_trainable, training_labels
from tools.metadata import MetadataEncoding, metadata_values
from tools.softmax import fit_softmax, softmax_rows

PRUNE_SINGLETONS_FROM = 200  # with at least this many examples, drop n-grams seen in only one of them
TOP_WORDS = 2


@dataclass(slots=True, frozen=True)
class _Model:
    version: str
    classes: tuple[str, ...]  # labels seen in training, in the order of the coefficient columns
    column_map: np.ndarray  # hashed column -> model column, -1 if unused
    idf: np.ndarray  # per model text column
    coef: np.ndarray  # (n_text + meta.width, n_classes)
    intercept: np.ndarray
    meta: MetadataEncoding | None  # None without metadata features
    word_ids: np.ndarray  # per model text column: index in ``vocabulary`` of a word hashed there, or -1
    vocabulary: list[str]  # the shared append-only word list (for evidence)
    unseen_prob: float
    trained_on: int


@dataclass(slots=True, frozen=True)
class _State:
    model: _Model | None
    reason: str  # why the tool abstains while there is no model


class TextClassifier:
    """Tool + Learnable. Construct from the spec and the project's labels."""

    kind = "text_classifier"

    def __init__(self, spec: TextClassifierSpec, labels: tuple[str, ...] | list[str]) -> None:
        self.spec = spec
        self.name = spec.name
        self.cost = spec.cost
        self.labels = tuple(labels)
        self._meta_keys = tuple(spec.metadata_features)
        self._state = _State(None, f"{self.name}: not trained yet (needs {spec.min_examples} ground-truth items)")
        self._fit_lock = threading.Lock()
        self._fits = 0
        self._vocab = _Vocabulary(spec.n_features)

    @property
    def version(self) -> str:
        model = self._state.model
        return model.version if model is not None else f"{self.name}-v0"

    def fork(self) -> TextClassifier:
        """An untrained copy with the same settings (for cross-fitting: no knowledge leaks into it).

        It shares only the word vocabulary used to name evidence (hashed column -> word, no labels).
        """
        clone = type(self)(self.spec, self.labels)
        clone._vocab = self._vocab
        return clone

    def prepare(self, batch: Batch) -> None:
        """Compute and cache, for the whole batch at once, the features ``predict`` and ``fit`` use.

        Call it on the full batch before predicting on subsets: features computed while predicting on
        ``batch.subset(rows)`` stay in that subset's cache, and the learner would later recompute them
        part by part. Cheap when already cached.
        """
        text_features(batch, self.spec.n_features, self.spec.char_ngrams)
        if self._meta_keys:
            metadata_values(batch, self._meta_keys)

    # --- predict ----------------------------------------------------------------------------------

    async def predict(self, batch: Batch, context: ToolContext) -> Votes:
        state = self._state  # one read: a concurrent fit cannot mix two models
        labels = context.labels
        model = state.model
        if model is None:
            return Votes.abstaining(self.name, len(batch), len(labels), state.reason)
        n = len(batch)
        if n == 0:
            return Votes(self.name, np.zeros((0, len(labels))), np.zeros(0, bool), np.zeros(0), [], model.version)
        x = self._design(batch, model)
        scores = x @ model.coef
        scores += model.intercept
        p_seen = softmax_rows(np.asarray(scores, dtype=np.float32)).astype(np.float64)
        probs = self._expand(p_seen, model, labels)
        evidence = self._evidence(x, p_seen, probs, model, labels)
        return Votes(self.name, probs, np.zeros(n, dtype=bool), np.full(n, self.cost, dtype=np.float64), evidence,
                     model.version)

    def _design(self, batch: Batch, model: _Model) -> sp.csr_matrix:
        x = reweight(text_features(batch, self.spec.n_features, self.spec.char_ngrams), model.column_map, model.idf)
        if model.meta is None:
            return x
        meta = model.meta.encode(metadata_values(batch, self._meta_keys))
        return sp.hstack([x, sp.csr_matrix(meta)], format="csr", dtype=np.float32)

    @staticmethod
    def _expand(p_seen: np.ndarray, model: _Model, labels: tuple[str, ...]) -> np.ndarray:
        """Probabilities over ``labels``: seen classes scaled down, unseen labels at the floor."""
        positions = label_positions(model.classes, labels)
        inside = positions >= 0
        n_unseen = len(labels) - int(inside.sum())
        floor = model.unseen_prob if n_unseen else 0.0
        probs = np.full((p_seen.shape[0], len(labels)), floor)
        seen = p_seen[:, inside]
        total = seen.sum(axis=1, keepdims=True)
        total[total == 0] = 1.0
        probs[:, positions[inside]] = seen / total * (1.0 - floor * n_unseen)
        return probs

    def _evidence(self, x: sp.csr_matrix, p_seen: np.ndarray, probs: np.ndarray, model: _Model,
                  labels: tuple[str, ...]) -> list[str]:
        top2 = np.argsort(-probs, axis=1)[:, :2]
        words = _top_words(x, p_seen.argmax(axis=1), model)
        p_top = np.take_along_axis(probs, top2, axis=1).tolist()
        out = []
        for i, (a, b) in enumerate(top2.tolist()):
            pa, pb = p_top[i]
            text = f"{model.version}: {labels[a]} {pa:.2f}, {labels[b]} {pb:.2f}"
            if words[i]:
                text += f" (top words: {', '.join(words[i])})"
            out.append(text)
        return out

    # --- fit --------------------------------------------------------------------------------------

    def fit(self, data: TrainingSet) -> ModelInfo:
        with self._fit_lock:
            return self._fit(data)

    def _fit(self, data: TrainingSet) -> ModelInfo:
        start = time.perf_counter()
        rows, y = training_labels(data, self.labels)
        n = len(rows)
        reason = not_trainable(self.name, y, self.labels, self.spec.min_examples, votes="it votes")
        if reason is not None:
            if self._state.model is None:
                self._state = _State(None, reason)
            return ModelInfo(self.name, self.version, n, {"skipped": 1.0})
        classes = np.unique(y)

        batch = data.batch if n == len(data.batch) else data.batch.subset(rows)
        x_all = text_features(batch, self.spec.n_features, self.spec.char_ngrams)
        counts = np.bincount(x_all.indices, minlength=x_all.shape[1])  # document frequency (rows hold unique columns)
        cols = np.flatnonzero(counts >= (2 if n >= PRUNE_SINGLETONS_FROM else 1))
        df = counts[cols]
        col_map = column_map(x_all.shape[1], cols)
        idf = idf_weights(n, df)
        x = reweight(x_all, col_map, idf)
        meta = None
        if self._meta_keys:
            raw = metadata_values(batch, self._meta_keys)
            meta = MetadataEncoding.fit(raw, self.spec.metadata_bins)
            x = sp.hstack([x, sp.csr_matrix(meta.encode(raw))], format="csr", dtype=np.float32)
        class_names = tuple(self.labels[c] for c in classes)
        y_pos = np.searchsorted(classes, y)
        old = self._state.model
        coef0, intercept0 = self._warm_start(old, cols, class_names, x.shape[1], meta)
        # A class the warm start does not know starts far from the optimum: one small step does not end the fit
        # (it stopped up to 13% above the optimum; DESIGN-NOTES section 15).
        new_class = old is not None and not set(class_names) <= set(old.classes)
        result = fit_softmax(x, y_pos, len(classes), self.spec.c, coef0=coef0, intercept0=intercept0, tol=1e-3,
                             patience=2 if new_class else 1)

        word_ids, vocabulary = self._vocab.names(batch, cols)
        self._fits += 1
        model = _Model(
            version=f"{self.name}-v{self._fits}", classes=class_names, column_map=col_map, idf=idf,
            coef=result.coef, intercept=result.intercept, meta=meta,
            word_ids=word_ids, vocabulary=vocabulary,
            unseen_prob=1.0 / (n + len(self.labels)), trained_on=n,
        )
        self._state = _State(model, "")  # the atomic swap
        metrics = {"classes": float(len(classes)), "columns": float(len(cols)), "iterations": float(result.iterations),
                   "train_loss": result.loss, "fit_seconds": time.perf_counter() - start}
        return ModelInfo(self.name, model.version, n, metrics)

    def _warm_start(self, old: _Model | None, cols: np.ndarray, classes: tuple[str, ...], width: int,
                    meta: MetadataEncoding | None) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Start from the previous model's weights mapped onto the new columns and classes (metadata columns:
        the same key's value and flag, and the steps at edges both models have)."""
        if old is None:
            return None, None
        coef = np.zeros((width, len(classes)), dtype=np.float32)
        intercept = np.zeros(len(classes), dtype=np.float32)
        in_old = label_positions(classes, old.classes)  # each new class's column in the old model
        new_cls = np.flatnonzero(in_old >= 0)
        old_cls = in_old[new_cls]
        old_rows = old.column_map[cols]  # the old model's row of each new text column
        hit = np.flatnonzero(old_rows >= 0)
        coef[np.ix_(hit, new_cls)] = old.coef[np.ix_(old_rows[hit], old_cls)]
        if meta is not None and old.meta is not None:
            in_old = meta.rows_in(old.meta)
            hit = np.flatnonzero(in_old >= 0)
            old_meta = old.coef[len(old.coef) - old.meta.width:]
            coef[np.ix_(width - meta.width + hit, new_cls)] = old_meta[np.ix_(in_old[hit], old_cls)]
        intercept[new_cls] = old.intercept[old_cls]
        return coef, intercept


class _Vocabulary:
    """Hashed column -> a word seen there, learned from training texts, to name evidence words.

    Append-only and label-free, so a tool and its cross-fitting forks share one (under a lock: fits
    may run in several threads). Each item (by key) is tokenised once.
    """

    def __init__(self, n_features: int) -> None:
        self._n_features = n_features
        self._lock = threading.Lock()
        self._column_word = np.full(n_features, -1, dtype=np.int32)  # hashed column -> index in _word_list
        self._word_list: list[str] = []  # append-only: indices handed out stay valid
        self._keys: set[str] = set()
        self._known: set[str] = set()
        self._token = re.compile(WORD_TOKEN_PATTERN)

    def names(self, batch: Batch, cols: np.ndarray) -> tuple[np.ndarray, list[str]]:
        """Learn the words of the batch's new items, then name each of ``cols``: (word index per column, -1
        if unknown; the word list those indices point into)."""
        with self._lock:
            new_items = [item for item in batch.items if item.key not in self._keys]
            if new_items:
                self._keys.update(item.key for item in new_items)
                # The unigram analyzer of ``word_vectorizer`` (lowercase, then the token pattern), over all new
                # texts at once: NUL separates them (no token or case rule spans it).
                found = set(self._token.findall("\x00".join(item.text or "" for item in new_items).lower()))
                found -= self._known
                if found:
                    self._known |= found
                    ordered = sorted(found)
                    hasher = FeatureHasher(self._n_features, input_type="string", alternate_sign=False)
                    columns = hasher.transform([[w] for w in ordered]).indices
                    for column, word in zip(columns.tolist(), ordered, strict=True):
                        if self._column_word[column] < 0:  # the first word seen in a column names it
                            self._column_word[column] = len(self._word_list)
                            self._word_list.append(word)
            return self._column_word[cols], self._word_list


def _top_words(x: sp.csr_matrix, predicted: np.ndarray, model: _Model) -> list[list[str]]:
    """Per row, the named words that push hardest towards the predicted class."""
    n = x.shape[0]
    n_text = len(model.idf)
    counts = np.diff(x.indptr)
    row = np.repeat(np.arange(n), counts)
    col = x.indices
    text = col < n_text
    row, col, val = row[text], col[text], x.data[text]
    named = model.word_ids[col] >= 0
    row, col, val = row[named], col[named], val[named]
    contrib = val * model.coef[col, predicted[row]]
    pos = contrib > 0
    row, col, contrib = row[pos], col[pos], contrib[pos]
    order = np.lexsort((-contrib, row))
    row, col = row[order], col[order]
    first = np.ones(len(row), dtype=bool)
    first[1:] = row[1:] != row[:-1]
    rank = np.arange(len(row)) - np.maximum.accumulate(np.where(first, np.arange(len(row)), 0))
    keep = rank < TOP_WORDS
    out: list[list[str]] = [[] for _ in range(n)]
    words = model.vocabulary
    for r, w in zip(row[keep].tolist(), model.word_ids[col[keep]].tolist(), strict=True):
        out[r].append(words[w])
    return out

