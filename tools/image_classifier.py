"""Learned image classifier: multinomial logistic regression on Pillow + numpy features.

Features per image (computed once per batch, shared through ``Batch.cached``): the greyscale image
resized to ``size`` x ``size`` (pixels scaled to [0, 1]) and a HOG-like descriptor: gradient
orientation histograms (``orientations`` bins, magnitude-weighted) over a ``cells`` x ``cells`` grid,
each cell L2-normalised. Items whose image cannot be decoded get a zero row and the tool abstains on
them with the reason. ``fit`` builds a new model and swaps one reference (like the text classifier).
"""

from __future__ import annotations

import threading
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp
from PIL import Image

from policies.exceptions import InputError
from policies.model import ImageClassifierSpec
from tools.base import Batch, Item, ModelInfo, ToolContext, TrainingSet, Votes
from tools.environment import ToolEnvironment
from tools.images import ImageLimits, decode_image
from tools.labels import label_positions, training_labels
from tools.softmax import fit_softmax, softmax_rows

DEFAULT_LIMITS = ImageLimits()


def image_features(batch: Batch, size: int, cells: int, orientations: int,
                   limits: ImageLimits = DEFAULT_LIMITS) -> tuple[np.ndarray, list[str]]:
    """((n, d) float32 features, per item "" or why its image could not be used under ``limits``)."""

    def build(items: list[Item]) -> list[tuple[np.ndarray, str]]:
        return [_one(item, size, cells, orientations, limits) for item in items]

    rows = batch.cached(f"image_features:{size}:{cells}:{orientations}:{limits.max_pixels}:{limits.max_bytes}", build)
    return np.stack([r[0] for r in rows]) if rows else np.zeros((0, 0), np.float32), [r[1] for r in rows]


def _one(item: Item, size: int, cells: int, orientations: int, limits: ImageLimits) -> tuple[np.ndarray, str]:
    width = size * size + cells * cells * orientations
    try:
        image = decode_image(item.image, limits)
    except InputError as exc:
        return np.zeros(width, np.float32), str(exc)
    grey = np.asarray(image.convert("L").resize((size, size), Image.Resampling.BILINEAR), dtype=np.float32) / 255.0
    return np.concatenate([grey.ravel(), _hog(grey, cells, orientations)]).astype(np.float32), ""


def _hog(grey: np.ndarray, cells: int, orientations: int) -> np.ndarray:
    gy, gx = np.gradient(grey)
    magnitude = np.hypot(gx, gy)
    angle = np.mod(np.arctan2(gy, gx), np.pi)  # unsigned orientation
    bins = np.minimum((angle / np.pi * orientations).astype(np.int64), orientations - 1)
    size = grey.shape[0]
    cell = np.minimum(np.arange(size) * cells // size, cells - 1)
    index = (cell[:, None] * cells + cell[None, :]) * orientations + bins
    hist = np.bincount(index.ravel(), weights=magnitude.ravel(), minlength=cells * cells * orientations).astype(
        np.float64, copy=False)
    hist = hist.reshape(cells * cells, orientations)
    hist /= np.linalg.norm(hist, axis=1, keepdims=True) + 1e-6
    return hist.ravel()


@dataclass(slots=True, frozen=True)
class _Model:
    version: str
    classes: tuple[str, ...]
    mean: np.ndarray
    std: np.ndarray
    coef: np.ndarray
    intercept: np.ndarray
    unseen_prob: float


class ImageClassifier:
    """Tool + Learnable over item images."""

    kind = "image_classifier"

    def __init__(self, spec: ImageClassifierSpec, labels: tuple[str, ...] | list[str], *,
                 env: ToolEnvironment | None = None) -> None:
        self.spec = spec
        self.limits = (env or ToolEnvironment()).image_limits
        self.name = spec.name
        self.cost = spec.cost
        self.labels = tuple(labels)
        self._model: _Model | None = None
        self._reason = f"{self.name}: not trained yet (needs {spec.min_examples} ground-truth items)"
        self._lock = threading.Lock()
        self._fits = 0

    @property
    def version(self) -> str:
        return self._model.version if self._model is not None else f"{self.name}-v0"

    def fork(self) -> ImageClassifier:
        return type(self)(self.spec, self.labels)

    def prepare(self, batch: Batch) -> None:
        self._features(batch)

    def _features(self, batch: Batch) -> tuple[np.ndarray, list[str]]:
        return image_features(batch, self.spec.size, self.spec.cells, self.spec.orientations, self.limits)

    async def predict(self, batch: Batch, context: ToolContext) -> Votes:
        model, labels, n = self._model, context.labels, len(batch)
        if model is None:
            return Votes.abstaining(self.name, n, len(labels), self._reason)
        x, errors = self._features(batch)
        if n == 0:
            return Votes(self.name, np.zeros((0, len(labels))), np.zeros(0, bool), np.zeros(0), [], model.version)
        scores = ((x - model.mean) / model.std) @ model.coef + model.intercept
        p_seen = softmax_rows(scores.astype(np.float32)).astype(np.float64)
        positions = label_positions(model.classes, labels)
        inside = positions >= 0
        n_unseen = len(labels) - int(inside.sum())
        floor = model.unseen_prob if n_unseen else 0.0
        probs = np.full((n, len(labels)), floor)
        probs[:, positions[inside]] = p_seen[:, inside] / p_seen[:, inside].sum(axis=1, keepdims=True) * (
            1.0 - floor * n_unseen)
        abstain = np.array([bool(e) for e in errors])
        probs[abstain] = 1.0 / len(labels)
        top = probs.argmax(axis=1)
        evidence = [f"{self.name}: {errors[i]}" if abstain[i] else
                    f"{model.version}: {labels[top[i]]} {probs[i, top[i]]:.2f}" for i in range(n)]
        return Votes(self.name, probs, abstain, np.full(n, self.cost), evidence, model.version)

    def fit(self, data: TrainingSet) -> ModelInfo:
        with self._lock:
            rows, y = training_labels(data, self.labels)
            batch = data.batch if len(rows) == len(data.batch) else data.batch.subset(rows)
            x, errors = self._features(batch)
            ok = np.array([not e for e in errors], dtype=bool)
            x, y = x[ok], y[ok]
            classes = np.unique(y)
            if len(y) < self.spec.min_examples or len(classes) < 2:
                if self._model is None:
                    self._reason = (f"{self.name}: {len(y)} usable ground-truth images, {len(classes)} classes; needs "
                                    f"{self.spec.min_examples} and 2")
                return ModelInfo(self.name, self.version, len(y), {"skipped": 1.0})
            mean = x.mean(axis=0)
            std = x.std(axis=0) + 0.05
            z = sp.csr_matrix(((x - mean) / std).astype(np.float32))
            result = fit_softmax(z, np.searchsorted(classes, y), len(classes), self.spec.c, tol=1e-3, patience=2)
            self._fits += 1
            model = _Model(f"{self.name}-v{self._fits}", tuple(self.labels[c] for c in classes), mean, std,
                           np.asarray(result.coef), np.asarray(result.intercept), 1.0 / (len(y) + len(self.labels)))
            self._model = model
            return ModelInfo(self.name, model.version, len(y), {"classes": float(len(classes)),
                                                                "iterations": float(result.iterations)})
