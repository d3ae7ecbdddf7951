"""What the text and image embedding tools share: the embedding cache, the classifier head, the kNN index.

- :class:`EmbeddingCache`: embeddings keyed by a hash of the input (text, image bytes), so retraining,
  out-of-fold rescoring and neighbour search never encode the same input twice. Shared by a tool and its
  cross-fitting forks (they hold no labels, only the encoder's output), bounded by ``max_items``.
- :class:`Head`: multinomial logistic regression (:func:`tools.softmax.fit_softmax`) on L2-normalised
  embeddings, warm-started from the previous head, with a kNN index of the labeled embeddings whose nearest
  examples are shown to reviewers.
"""

from __future__ import annotations

import hashlib
import sqlite3
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tools.labels import label_positions
from tools.softmax import fit_softmax, softmax_rows

SNIPPET_CHARS = 60
Encode = Callable[[list[int]], np.ndarray]  # positions of the inputs to encode -> (len, d) float32 rows


def input_hash(data: bytes) -> bytes:
    return hashlib.blake2b(data, digest_size=16).digest()


class EmbeddingStore:
    """Embeddings on disk (one SQLite file per model and settings), so a restarted worker, which retrains on all
    its ground truth, or another replay of the same texts does not encode them again."""

    def __init__(self, folder: str, namespace: str) -> None:
        Path(folder).mkdir(parents=True, exist_ok=True)
        name = hashlib.blake2b(namespace.encode("utf-8"), digest_size=8).hexdigest()
        self._db = sqlite3.connect(str(Path(folder) / f"embeddings-{name}.sqlite"), check_same_thread=False)
        self._db.execute("CREATE TABLE IF NOT EXISTS embedding (hash BLOB PRIMARY KEY, vector BLOB NOT NULL)")
        self._lock = threading.Lock()

    def get(self, hashes: Sequence[bytes]) -> dict[bytes, np.ndarray]:
        out: dict[bytes, np.ndarray] = {}
        with self._lock:
            for start in range(0, len(hashes), 500):
                chunk = list(hashes[start:start + 500])
                marks = ",".join("?" * len(chunk))
                for h, blob in self._db.execute(f"SELECT hash, vector FROM embedding WHERE hash IN ({marks})", chunk):
                    out[bytes(h)] = np.frombuffer(blob, dtype=np.float32)
        return out

    def put(self, rows: dict[bytes, np.ndarray]) -> None:
        with self._lock:
            self._db.executemany("INSERT OR IGNORE INTO embedding VALUES (?, ?)",
                                 [(h, np.asarray(v, np.float32).tobytes()) for h, v in rows.items()])
            self._db.commit()


class EmbeddingCache:
    """Input hash -> embedding row (float32, L2-normalised), least recently used dropped past ``max_items``;
    backed by an :class:`EmbeddingStore` when the deployment names a folder."""

    def __init__(self, max_items: int, store: EmbeddingStore | None = None) -> None:
        self.max_items = max_items
        self.store = store
        self._rows: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._lock = threading.Lock()
        self._encode_lock = threading.Lock()
        self.encoded = 0  # inputs sent to the encoder
        self.loaded = 0  # inputs read from the store
        self.hits = 0

    def embed(self, hashes: Sequence[bytes], encode: Encode) -> np.ndarray:
        """Rows for ``hashes``; ``encode(positions)`` is called once, on the distinct missing ones."""
        with self._lock:
            found = [self._rows.get(h) for h in hashes]
            for h, row in zip(hashes, found, strict=True):
                if row is not None:
                    self._rows.move_to_end(h)
        first: dict[bytes, int] = {}
        for i, (h, row) in enumerate(zip(hashes, found, strict=True)):
            if row is None and h not in first:
                first[h] = i
        new: dict[bytes, np.ndarray] = {}
        if first:
            new = self.store.get(list(first)) if self.store is not None else {}
            todo = {h: i for h, i in first.items() if h not in new}
            if todo:
                with self._encode_lock:  # one encoder call at a time (it uses every core already)
                    fresh = dict(zip(todo, np.asarray(encode(list(todo.values())), dtype=np.float32), strict=True))
                if self.store is not None:
                    self.store.put(fresh)
                new.update(fresh)
            with self._lock:
                self.encoded += len(todo)
                self.loaded += len(first) - len(todo)
                for h, row in new.items():
                    self._rows[h] = row
                while len(self._rows) > self.max_items:
                    self._rows.popitem(last=False)
        rows = [row if row is not None else new[h] for h, row in zip(hashes, found, strict=True)]
        with self._lock:
            self.hits += len(hashes) - len(first)
        if not rows:
            return np.zeros((0, 0), dtype=np.float32)
        return np.stack(rows)


@dataclass(slots=True, frozen=True)
class HeadModel:
    version: str
    classes: tuple[str, ...]  # labels seen in training, in the order of the coefficient columns
    coef: np.ndarray  # (d, n_classes)
    intercept: np.ndarray
    unseen_prob: float
    index: np.ndarray  # (n_examples, d) labeled embeddings
    index_labels: np.ndarray  # per example: index into the tool's labels
    keys: tuple[str, ...]
    snippets: tuple[str, ...]


def fit_head(old: HeadModel | None, version: str, x: np.ndarray, y: np.ndarray, labels: tuple[str, ...], c: float,
             keys: tuple[str, ...], snippets: tuple[str, ...]) -> tuple[HeadModel, dict[str, float]]:
    """A head on embeddings ``x`` for label indices ``y`` (into ``labels``), warm-started from ``old``."""
    classes = np.unique(y)
    names = tuple(labels[i] for i in classes)
    coef0 = intercept0 = None
    if old is not None:
        in_old = label_positions(names, old.classes)
        hit = np.flatnonzero(in_old >= 0)
        coef0 = np.zeros((x.shape[1], len(names)), dtype=np.float32)
        intercept0 = np.zeros(len(names), dtype=np.float32)
        coef0[:, hit] = old.coef[:, in_old[hit]]
        intercept0[hit] = old.intercept[in_old[hit]]
    result = fit_softmax(x, np.searchsorted(classes, y), len(classes), c,
                         coef0=coef0, intercept0=intercept0, tol=1e-4)
    model = HeadModel(version, names, result.coef, result.intercept, 1.0 / (len(y) + len(labels)), x, y, keys,
                      snippets)
    return model, {"classes": float(len(names)), "iterations": float(result.iterations), "train_loss": result.loss}


def head_probs(model: HeadModel, x: np.ndarray, labels: tuple[str, ...]) -> np.ndarray:
    """The head's distribution over ``labels``: seen classes scaled down, unseen labels at the floor."""
    p_seen = softmax_rows((x @ model.coef + model.intercept).astype(np.float32)).astype(np.float64)
    positions = label_positions(model.classes, labels)
    inside = positions >= 0
    n_unseen = len(labels) - int(inside.sum())
    floor = model.unseen_prob if n_unseen else 0.0
    probs = np.full((x.shape[0], len(labels)), floor)
    seen = p_seen[:, inside]
    total = seen.sum(axis=1, keepdims=True)
    total[total == 0] = 1.0
    probs[:, positions[inside]] = seen / total * (1.0 - floor * n_unseen)
    return probs


def neighbours(model: HeadModel, x: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """The ``k`` most similar labeled examples per row: (example indices, cosine similarities), each (n, k')."""
    k = min(k, len(model.keys))
    if k == 0 or x.shape[0] == 0:
        return np.zeros((x.shape[0], 0), dtype=np.int64), np.zeros((x.shape[0], 0), dtype=np.float32)
    sims = x @ model.index.T
    top = np.argpartition(-sims, k - 1, axis=1)[:, :k]
    top_sims = np.take_along_axis(sims, top, axis=1)
    order = np.argsort(-top_sims, axis=1)
    return np.take_along_axis(top, order, axis=1), np.take_along_axis(top_sims, order, axis=1)


def evidence(model: HeadModel, probs: np.ndarray, x: np.ndarray, k: int, tool_labels: tuple[str, ...],
             labels: tuple[str, ...]) -> list[str]:
    """Per row: the top two labels and the nearest labeled examples (key, label, similarity, snippet)."""
    top2 = np.argsort(-probs, axis=1)[:, :2]
    near, sims = neighbours(model, x, k)
    out = []
    for i, (a, b) in enumerate(top2.tolist()):
        text = f"{model.version}: {labels[a]} {probs[i, a]:.2f}, {labels[b]} {probs[i, b]:.2f}"
        shown = [f'{model.keys[e]} {tool_labels[model.index_labels[e]]} {s:.2f} "{model.snippets[e]}"'
                 for e, s in zip(near[i].tolist(), sims[i].tolist(), strict=True)]
        if shown:
            text += "; neighbours: " + " | ".join(shown)
        out.append(text)
    return out


def snippet(text: str | None) -> str:
    flat = " ".join((text or "").split())
    return flat if len(flat) <= SNIPPET_CHARS else flat[: SNIPPET_CHARS - 1] + "…"
