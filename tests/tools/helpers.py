"""Helpers for the tools tests: dataset paths (skipped cleanly when absent), batches, training sets."""

from __future__ import annotations

import asyncio
import csv
from collections.abc import Coroutine, Sequence
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
import pytest

from tools.base import Batch, Item, ToolContext, TrainingSet, Votes

DATA_DIR = Path(__file__).resolve().parents[2] / ".." / "shared" / "data"
SMS_LABELS = ("ham", "spam")

T = TypeVar("T")


def run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def read_dataset(name: str) -> list[dict[str, str]]:
    path = DATA_DIR / name
    if not path.is_file():
        pytest.skip(f"dataset {path.resolve()} is not present; put {name} in <repo>/../shared/data to run this test")
    with path.open(newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def items_of(rows: Sequence[dict[str, str]], prefix: str = "x") -> list[Item]:
    return [Item(key=f"{prefix}{i}", text=row["text"]) for i, row in enumerate(rows)]


def label_indices(rows: Sequence[dict[str, str]], labels: Sequence[str]) -> np.ndarray:
    index = {label: i for i, label in enumerate(labels)}
    return np.array([index[row["label"]] for row in rows], dtype=np.int64)


def training_set(rows: Sequence[dict[str, str]], labels: tuple[str, ...], prefix: str = "x") -> TrainingSet:
    return TrainingSet(Batch(items_of(rows, prefix)), label_indices(rows, labels), labels)


def predict(tool: Any, items: Sequence[Item] | Batch, labels: tuple[str, ...]) -> Votes:
    batch = items if isinstance(items, Batch) else Batch(items)
    return run(tool.predict(batch, ToolContext(labels)))


def log_loss(probs: np.ndarray, y: np.ndarray) -> float:
    return float(-np.mean(np.log(np.clip(probs[np.arange(len(y)), y], 1e-15, 1.0))))
