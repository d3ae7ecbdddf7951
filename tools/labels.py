"""Small helpers to map labels between a tool's label set, a training set and a run's context."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from policies.exceptions import ToolError
from tools.base import TrainingSet


def label_positions(source: Sequence[str], target: Sequence[str]) -> np.ndarray:
    """For each label in ``source``, its index in ``target`` (-1 if absent)."""
    index = {label: i for i, label in enumerate(target)}
    return np.array([index.get(label, -1) for label in source], dtype=np.int64)


def training_labels(data: TrainingSet, labels: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
    """Rows of ``data`` whose label belongs to ``labels``, and those labels as indices into ``labels``.

    ``data.y`` indexes ``data.labels``; the two label sets may differ (a policy changed its labels),
    so labels are matched by name and rows with labels the tool does not know are left out.
    """
    y = np.asarray(data.y, dtype=np.int64)
    if len(y) != len(data.batch):
        raise ToolError(f"training set: {len(y)} labels for {len(data.batch)} items")
    if len(y) and (y.min() < 0 or y.max() >= len(data.labels)):
        raise ToolError(f"training set: label index {int(y.max()) if y.max() >= 0 else int(y.min())} is outside "
                        f"the {len(data.labels)} labels {tuple(data.labels)}")
    mapping = label_positions(data.labels, labels)
    mapped = mapping[y] if len(y) else y
    rows = np.flatnonzero(mapped >= 0)
    return rows, mapped[rows]


def not_trainable(name: str, y: np.ndarray, labels: Sequence[str], min_examples: int, *,
                  votes: str = "it votes") -> str | None:
    """Why a learning tool cannot fit on the training labels ``y`` yet (None: it can): too few examples, or a
    single class. ``votes`` names what waits for them in the message ("it votes", "the head votes")."""
    if len(y) < min_examples:
        return f"{name}: {len(y)} of {min_examples} ground-truth items needed before {votes}"
    classes = np.unique(y)
    if len(classes) < 2:
        return f"{name}: only one class seen so far ({labels[classes[0]]!r}); needs two"
    return None
