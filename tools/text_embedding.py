"""Text embedding tool: a pretrained sentence encoder behind the tool interface.

The encoder (sentence-transformers on PyTorch, or ONNX Runtime with ``runtime: onnx`` / ``onnx-int8``;
DESIGN-NOTES section 13) turns each text into an L2-normalised vector; embeddings are cached by text hash
(:class:`EmbeddingCache`), so the head's retraining, out-of-fold rescoring and neighbour search never encode a
text twice. Votes:

- before the head is trained (and when ``zero_shot``): a zero-shot vote, the softmax of the cosine
  similarities between the text and each label's name (or its one-line description in
  ``label_descriptions``) at ``zero_shot_temperature``; the pool weighs it like any other vote;
- then the head: logistic regression on the embeddings, trained on ground truth and warm-started, versioned
  ``<name>-vN``; its evidence names the nearest labeled examples (kNN on the same embeddings).

Encoding is the expensive part (tens to hundreds of texts per second on CPU): declare its measured cost per
item in the policy, above ``planner.cheap_cost``, and the planner calls it only where its vote can change
the outcome (plus the exploration sample). ``prepare`` is deliberately absent: encoding the whole batch up
front would defeat the cascade.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import numpy as np

from policies.exceptions import ToolError
from policies.installed import ModelNotInstalledError, resolve_model
from policies.model import TextEmbeddingSpec
from tools.base import Batch, ModelInfo, ToolContext, TrainingSet, Votes
from tools.embedding_head import (
    EmbeddingCache,
    EmbeddingStore,
    HeadModel,
    evidence,
    fit_head,
    head_probs,
    input_hash,
    snippet,
)
from tools.environment import ToolEnvironment
from tools.labels import not_trainable, training_labels
from tools.length_buckets import encode_in_buckets
from tools.onnx_encoder import OnnxEncoder
from tools.softmax import softmax_rows


class TextEncoder(Protocol):
    """What the tool needs from a sentence encoder: texts -> (n, d) float32 rows of unit length."""

    def encode(self, texts: list[str]) -> np.ndarray: ...


class SentenceTransformerEncoder:
    """A sentence-transformers model loaded from a local path (no download), on ``device``."""

    def __init__(self, spec: TextEmbeddingSpec) -> None:
        try:
            path = resolve_model(spec.model)
        except ModelNotInstalledError as exc:
            raise ToolError(f"tool {spec.name!r}: {exc}") from None
        try:
            import torch
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise ToolError(f"tool {spec.name!r}: the text_embedding tool needs sentence-transformers; install the "
                            "optional extra: pip install 'labelagent[embeddings]'") from None
        if spec.device == "cuda" and not torch.cuda.is_available():
            raise ToolError(f"tool {spec.name!r}: device 'cuda' asked but no CUDA device is available; "
                            "use device: cpu")
        self.model = SentenceTransformer(str(path), device=spec.device, local_files_only=True)
        self.model.max_seq_length = spec.max_seq_length
        self.batch_size = spec.batch_size

    def encode(self, texts: list[str]) -> np.ndarray:
        lengths = [len(ids) for ids in self.model.tokenizer(texts, truncation=True,
                                                            max_length=self.model.max_seq_length)["input_ids"]]

        def bucket(rows: list[int]) -> np.ndarray:  # one model call per bucket of similar lengths: little padding
            return np.asarray(self.model.encode([texts[i] for i in rows], batch_size=self.batch_size,
                                                convert_to_numpy=True, normalize_embeddings=True,
                                                show_progress_bar=False), dtype=np.float32)

        return encode_in_buckets(lengths, self.batch_size, bucket)


def make_encoder(spec: TextEmbeddingSpec, cache_dir: str | None) -> TextEncoder:
    """The spec's runtime: sentence-transformers on torch, or ONNX Runtime (the export kept next to the embedding
    cache when the deployment names one, else in the user's cache folder)."""
    if spec.runtime != "torch":
        return OnnxEncoder(spec, Path(cache_dir) / "onnx" if cache_dir else None)
    return SentenceTransformerEncoder(spec)


@dataclass(slots=True, frozen=True)
class _State:
    head: HeadModel | None
    reason: str  # why the head does not vote yet


class TextEmbedding:
    """Tool + Learnable. ``encoder`` (tests, or to share one loaded model) defaults to the spec's model."""

    kind = "text_embedding"

    def __init__(self, spec: TextEmbeddingSpec, labels: tuple[str, ...] | list[str], *,
                 env: ToolEnvironment | None = None, encoder: TextEncoder | None = None,
                 cache: EmbeddingCache | None = None) -> None:
        self.spec = spec
        self.name = spec.name
        self.cost = spec.cost
        self.labels = tuple(labels)
        folder = (env or ToolEnvironment()).embedding_cache_dir
        self.encoder: TextEncoder = encoder if encoder is not None else make_encoder(spec, folder)
        if cache is None:
            runtime = "" if spec.runtime == "torch" else f":{spec.runtime}"  # another runtime: other vectors
            namespace = f"text:{resolve_model(spec.model).resolve()}:{spec.max_seq_length}{runtime}"
            cache = EmbeddingCache(spec.cache_size, EmbeddingStore(folder, namespace) if folder else None)
        self.cache = cache
        self._state = _State(None, f"{self.name}: not trained yet (needs {spec.min_examples} ground-truth items)")
        self._prototypes: np.ndarray | None = None
        self._fit_lock = threading.Lock()
        self._fits = 0
        self.encode_seconds = 0.0

    @property
    def version(self) -> str:
        head = self._state.head
        return head.version if head is not None else f"{self.name}-v0"

    def fork(self) -> TextEmbedding:
        """An untrained copy sharing the encoder and the embedding cache (inputs only, no labels)."""
        return type(self)(self.spec, self.labels, encoder=self.encoder, cache=self.cache)

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """Unit-length embeddings of ``texts``, each distinct text encoded at most once per cache lifetime."""
        hashes = [input_hash(t.encode("utf-8")) for t in texts]

        def encode(positions: list[int]) -> np.ndarray:
            start = time.perf_counter()
            out = self.encoder.encode([texts[i] for i in positions])
            self.encode_seconds += time.perf_counter() - start
            return out

        return self.cache.embed(hashes, encode)

    # --- predict ----------------------------------------------------------------------------------

    async def predict(self, batch: Batch, context: ToolContext) -> Votes:
        state = self._state  # one read: a concurrent fit cannot mix two heads
        labels = context.labels
        n = len(batch)
        head = state.head
        if head is None and not self.spec.zero_shot:
            return Votes.abstaining(self.name, n, len(labels), state.reason)
        if n == 0:
            return Votes(self.name, np.zeros((0, len(labels))), np.zeros(0, bool), np.zeros(0), [], self.version)
        x = await asyncio.to_thread(self.embed, batch.texts)  # CPU-bound: off the event loop
        cost = np.full(n, self.cost, dtype=np.float64)
        if head is None:
            probs = self._zero_shot(x, labels)
            top = probs.argmax(axis=1)
            notes = [f"{self.name} zero-shot: {labels[j]} {probs[i, j]:.2f} (similarity to label descriptions)"
                     for i, j in enumerate(top.tolist())]
            return Votes(self.name, probs, np.zeros(n, dtype=bool), cost, notes, f"{self.name}-zero-shot")
        probs = head_probs(head, x, labels)
        return Votes(self.name, probs, np.zeros(n, dtype=bool), cost,
                     evidence(head, probs, x, self.spec.k, self.labels, labels), head.version)

    def _zero_shot(self, x: np.ndarray, labels: tuple[str, ...]) -> np.ndarray:
        prototypes = self._prototypes
        if prototypes is None:
            prototypes = self._prototypes = self.embed([self.label_text(lab) for lab in self.labels])
        order = np.array([self.labels.index(lab) if lab in self.labels else -1 for lab in labels])
        logits = np.full((x.shape[0], len(labels)), -60.0, dtype=np.float32)
        known = order >= 0
        logits[:, known] = (x @ prototypes[order[known]].T) / self.spec.zero_shot_temperature
        return softmax_rows(logits).astype(np.float64)

    def label_text(self, label: str) -> str:
        """What a label's zero-shot prototype encodes: its name in words, and its description if given."""
        words = " ".join(label.replace("_", " ").replace("-", " ").split())
        description = self.spec.label_descriptions.get(label)
        return f"{words}: {description}" if description else words

    # --- fit --------------------------------------------------------------------------------------

    def fit(self, data: TrainingSet) -> ModelInfo:
        with self._fit_lock:
            return self._fit(data)

    def _fit(self, data: TrainingSet) -> ModelInfo:
        start = time.perf_counter()
        rows, y = training_labels(data, self.labels)
        n = len(rows)
        reason = not_trainable(self.name, y, self.labels, self.spec.min_examples, votes="the head votes")
        if reason is not None:
            if self._state.head is None:
                self._state = _State(None, reason)
            return ModelInfo(self.name, self.version, n, {"skipped": 1.0})
        items = [data.batch.items[r] for r in rows.tolist()]
        encoded_before = self.cache.encoded
        x = self.embed([item.text or "" for item in items])
        self._fits += 1
        head, metrics = fit_head(self._state.head, f"{self.name}-v{self._fits}", x, y, self.labels, self.spec.c,
                                 tuple(item.key for item in items), tuple(snippet(item.text) for item in items))
        self._state = _State(head, "")  # the atomic swap
        metrics.update({"encoded": float(self.cache.encoded - encoded_before),
                        "fit_seconds": time.perf_counter() - start})
        return ModelInfo(self.name, head.version, n, metrics)
