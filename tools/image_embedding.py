"""Image embedding tool: a pretrained backbone behind the tool interface, the image twin of ``text_embedding``.

The backbone is a file named in the policy: a ``torch.export`` program (``.pt2``), a TorchScript module
(``.pt``) or an ONNX graph (``.onnx``, run with onnxruntime when installed). It takes a float32 NCHW batch
of RGB images resized to ``size`` x ``size`` and normalised with ``mean``/``std``; its output, (n, d) or a
feature map (n, c, h, w) that is average-pooled, is L2-normalised into the embedding. Embeddings are cached
by a hash of the image bytes; a logistic-regression head trained on ground truth votes, with the nearest
labeled images (by key) as evidence. Items whose image cannot be decoded abstain with the reason.

How good a given backbone is on a given stream is not measured here: none ships with this repository.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from policies.exceptions import InputError, ToolError
from policies.model import ImageEmbeddingSpec
from tools.base import Batch, Item, ModelInfo, ToolContext, TrainingSet, Votes
from tools.embedding_head import EmbeddingCache, EmbeddingStore, HeadModel, evidence, fit_head, head_probs, input_hash
from tools.environment import ToolEnvironment
from tools.images import decode_image
from tools.labels import training_labels

Backbone = Callable[[np.ndarray], np.ndarray]  # (n, 3, size, size) float32 -> (n, d) or (n, c, h, w)


def load_backbone(spec: ImageEmbeddingSpec) -> Backbone:
    """The spec's backbone file as a numpy -> numpy function (no download; the file must exist)."""
    path = Path(spec.model).expanduser()
    if not path.is_file():
        raise ToolError(f"tool {spec.name!r}: backbone file {spec.model!r} does not exist")
    if path.suffix == ".onnx":
        return _onnx(spec, path)
    try:
        import torch
    except ImportError:
        raise ToolError(f"tool {spec.name!r}: a {path.suffix} backbone needs PyTorch; install the optional extra: "
                        "pip install 'labelagent[embeddings]'") from None
    if spec.device == "cuda" and not torch.cuda.is_available():
        raise ToolError(f"tool {spec.name!r}: device 'cuda' asked but no CUDA device is available; use device: cpu")
    try:
        module = torch.export.load(str(path)).module() if path.suffix == ".pt2" else torch.jit.load(str(path))  # type: ignore[no-untyped-call,unused-ignore]
    except Exception as exc:  # a corrupt or foreign file: the policy's tool cannot be built
        raise ToolError(f"tool {spec.name!r}: cannot load backbone {path.name}: {type(exc).__name__}") from None
    module = module.to(spec.device)

    def run(x: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            out = module(torch.from_numpy(x).to(spec.device))
        return np.asarray(out.float().cpu().numpy())

    return run


def _onnx(spec: ImageEmbeddingSpec, path: Path) -> Backbone:
    try:
        import onnxruntime  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        raise ToolError(f"tool {spec.name!r}: an .onnx backbone needs onnxruntime (pip install onnxruntime)") from None
    providers = ["CUDAExecutionProvider"] if spec.device == "cuda" else ["CPUExecutionProvider"]
    session = onnxruntime.InferenceSession(str(path), providers=providers)
    name = session.get_inputs()[0].name

    def run(x: np.ndarray) -> np.ndarray:
        return np.asarray(session.run(None, {name: x})[0])

    return run


@dataclass(slots=True, frozen=True)
class _State:
    head: HeadModel | None
    reason: str


class ImageEmbedding:
    """Tool + Learnable over item images. ``backbone`` (tests, or to share one) defaults to the spec's file."""

    kind = "image_embedding"

    def __init__(self, spec: ImageEmbeddingSpec, labels: tuple[str, ...] | list[str], *,
                 env: ToolEnvironment | None = None, backbone: Backbone | None = None,
                 cache: EmbeddingCache | None = None) -> None:
        self.spec = spec
        self.name = spec.name
        self.cost = spec.cost
        self.labels = tuple(labels)
        self.env = env or ToolEnvironment()
        self.backbone = backbone if backbone is not None else load_backbone(spec)
        if cache is None:
            folder = self.env.embedding_cache_dir
            namespace = f"image:{Path(spec.model).expanduser().resolve()}:{spec.size}:{spec.mean}:{spec.std}"
            cache = EmbeddingCache(spec.cache_size, EmbeddingStore(folder, namespace) if folder else None)
        self.cache = cache
        self._state = _State(None, f"{self.name}: not trained yet (needs {spec.min_examples} ground-truth items)")
        self._fit_lock = threading.Lock()
        self._fits = 0

    @property
    def version(self) -> str:
        head = self._state.head
        return head.version if head is not None else f"{self.name}-v0"

    def fork(self) -> ImageEmbedding:
        return type(self)(self.spec, self.labels, env=self.env, backbone=self.backbone, cache=self.cache)

    def embed(self, items: list[Item]) -> tuple[np.ndarray, list[str]]:
        """(unit-length embeddings, per item "" or why its image could not be used: that row is zero)."""
        pixels: list[np.ndarray | None] = []
        errors: list[str] = []
        for item in items:
            try:
                image = decode_image(item.image, self.env.image_limits)
            except InputError as exc:
                pixels.append(None)
                errors.append(str(exc))
                continue
            pixels.append(self._pixels(image))
            errors.append("")
        ok = [i for i, p in enumerate(pixels) if p is not None]
        hashes = [input_hash(items[i].image or b"") for i in ok]

        def encode(positions: list[int]) -> np.ndarray:
            x = np.stack([pixels[ok[p]] for p in positions])  # type: ignore[misc]
            rows = [self._pooled(self.backbone(x[s:s + self.spec.batch_size]))
                    for s in range(0, len(x), self.spec.batch_size)]
            return np.concatenate(rows)

        good = self.cache.embed(hashes, encode) if ok else np.zeros((0, 0), np.float32)
        width = good.shape[1] if ok else 1
        out = np.zeros((len(items), width), dtype=np.float32)
        if ok:
            out[ok] = good
        return out, errors

    def _pixels(self, image: Image.Image) -> np.ndarray:
        size = self.spec.size
        rgb = np.asarray(image.convert("RGB").resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32)
        scaled = (rgb / np.float32(255.0) - np.asarray(self.spec.mean, np.float32)) / np.asarray(self.spec.std,
                                                                                               np.float32)
        return np.ascontiguousarray(scaled.transpose(2, 0, 1), dtype=np.float32)

    @staticmethod
    def _pooled(out: np.ndarray) -> np.ndarray:
        if out.ndim > 2:
            out = out.reshape(out.shape[0], out.shape[1], -1).mean(axis=2)
        out = out.astype(np.float32)
        out /= np.linalg.norm(out, axis=1, keepdims=True) + 1e-12
        return out

    async def predict(self, batch: Batch, context: ToolContext) -> Votes:
        state = self._state
        labels = context.labels
        n = len(batch)
        head = state.head
        if head is None:
            return Votes.abstaining(self.name, n, len(labels), state.reason)
        x, errors = await asyncio.to_thread(self.embed, batch.items)
        probs = head_probs(head, x, labels)
        abstain = np.array([bool(e) for e in errors], dtype=bool)
        probs[abstain] = 1.0 / len(labels)
        notes = evidence(head, probs, x, self.spec.k, self.labels, labels)
        notes = [f"{self.name}: {errors[i]}" if abstain[i] else notes[i] for i in range(n)]
        return Votes(self.name, probs, abstain, np.full(n, self.cost, dtype=np.float64), notes, head.version)

    def fit(self, data: TrainingSet) -> ModelInfo:
        with self._fit_lock:
            start = time.perf_counter()
            rows, y = training_labels(data, self.labels)
            items = [data.batch.items[r] for r in rows.tolist()]
            x, errors = self.embed(items) if items else (np.zeros((0, 1), np.float32), [])
            usable = np.array([not e for e in errors], dtype=bool)
            x, y = x[usable], y[usable]
            items = [it for it, ok in zip(items, usable.tolist(), strict=True) if ok]
            if len(y) < self.spec.min_examples or len(np.unique(y)) < 2:
                if self._state.head is None:
                    self._state = _State(None, f"{self.name}: {len(y)} usable ground-truth images, "
                                               f"{len(np.unique(y))} classes; needs {self.spec.min_examples} and 2")
                return ModelInfo(self.name, self.version, len(y), {"skipped": 1.0})
            self._fits += 1
            head, metrics = fit_head(self._state.head, f"{self.name}-v{self._fits}", x, y, self.labels,
                                     self.spec.c, tuple(it.key for it in items), tuple(it.key for it in items))
            self._state = _State(head, "")
            metrics["fit_seconds"] = time.perf_counter() - start
            return ModelInfo(self.name, head.version, len(y), metrics)
