"""Bounded learning cost: which ground-truth rows train the models, and when to retrain.

A continuous stream runs for months; training on all ground truth every ``retrain_every`` answers makes the
total training work grow with the square of the labels. Two rules keep the work per answer bounded:

- :func:`retrain_step`: answers between retrains. Geometric early (a tenth of the ground truth, at least
  ``MIN_RETRAIN_STEP``: the first labels matter most), then every ``retrain_every`` answers.
- :class:`TrainingWindow`: every label trains until the ground truth reaches ``cap`` rows. Past it, the training
  set is the ``recent`` most recent rows (the stream changes; recent labels describe it best), a uniform
  reservoir of ``cap - recent`` older rows (rare patterns and old classes are not forgotten) and, for every
  class, its ``class_floor`` most recent rows (a rare class keeps examples however long ago it was seen).

So a retrain costs at most ``cap + n_classes * class_floor`` rows, and each answer costs O(1) bookkeeping
(Vitter's algorithm R for the reservoir, a bounded deque per class). The reservoir's draws come from a
generator seeded by ``seed``: the same answers in the same order give the same training set.
"""

from __future__ import annotations

import random
from collections import deque
from dataclasses import dataclass, field

import numpy as np

MIN_RETRAIN_STEP = 5  # answers between the earliest retrains
EARLY_FRACTION = 0.10  # before ``retrain_every``, retrain after this share of new ground truth
TRAINING_CAP = 20_000  # every label trains until the ground truth has this many rows
RECENT_SHARE = 0.5  # past the cap: this share of it is the most recent rows, the rest a reservoir of older ones
CLASS_FLOOR = 50  # past the cap: each class keeps at least its most recent rows, up to this many


def retrain_step(n_ground_truth: int, retrain_every: int) -> int:
    """Answers between retrains with ``n_ground_truth`` rows: geometric early, ``retrain_every`` later."""
    return min(retrain_every, max(MIN_RETRAIN_STEP, int(EARLY_FRACTION * n_ground_truth)))


@dataclass(slots=True)
class TrainingWindow:
    """The rows that train the models: all of them up to ``cap``, then recent + reservoir + per-class floors.

    Rows are numbered in arrival order from 0 (the learner's ground-truth rows); :meth:`add` is called once per
    new row with its class, :meth:`rows` returns the training rows in increasing order (``None``: all of them).
    """

    cap: int = TRAINING_CAP
    recent_share: float = RECENT_SHARE
    class_floor: int = CLASS_FLOOR
    seed: int = 0
    n: int = 0
    _reservoir: list[int] = field(default_factory=list)
    _offered: int = 0  # older rows offered to the reservoir so far
    _per_class: dict[int, deque[int]] = field(default_factory=dict)
    _since: int = 0  # the first row of the current regime (moved by :meth:`restart` when drift is detected)
    _rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        if self.cap < 2:
            raise ValueError(f"training window cap must be at least 2, got {self.cap}")
        if not 0.0 < self.recent_share < 1.0:
            raise ValueError(f"recent_share must be in (0, 1), got {self.recent_share}")
        self._rng = random.Random(self.seed)

    @property
    def n_recent(self) -> int:
        return max(1, int(self.recent_share * self.cap))

    @property
    def n_reservoir(self) -> int:
        return self.cap - self.n_recent

    def add(self, label: int) -> int:
        """Register the next row (of class ``label``); returns its row number."""
        row = self.n
        self.n += 1
        floor = self._per_class.get(label)
        if floor is None:
            floor = self._per_class[label] = deque(maxlen=self.class_floor)
        floor.append(row)
        leaving = row - self.n_recent  # the row that just left the recent part
        if leaving >= self._since:
            self._offer(leaving)
        return row

    def _offer(self, row: int) -> None:
        """Algorithm R: the reservoir stays a uniform sample of every row that left the recent part."""
        self._offered += 1
        if len(self._reservoir) < self.n_reservoir:
            self._reservoir.append(row)
            return
        j = self._rng.randrange(self._offered)
        if j < self.n_reservoir:
            self._reservoir[j] = row

    def restart(self) -> None:
        """Drift was detected: rows from here on are the new regime. Older rows train only as their class's most
        recent rows (the class floors), so a class not seen since is not forgotten while the old regime no longer
        outweighs the new one; the reservoir starts again from the new rows."""
        self._since = self.n
        self._reservoir = []
        self._offered = 0

    def rows(self) -> np.ndarray | None:
        """Training rows in increasing order, or ``None`` while every row trains (at most ``cap`` rows)."""
        if self._since == 0 and self.n <= self.cap:
            return None
        floors = np.asarray([r for d in self._per_class.values() for r in d], dtype=np.int64)
        if self.n - self._since <= self.cap:  # after a restart, under the cap: every new row and the class floors
            return np.unique(np.concatenate([np.arange(self._since, self.n, dtype=np.int64), floors]))
        recent = np.arange(self.n - self.n_recent, self.n, dtype=np.int64)
        return np.unique(np.concatenate([np.asarray(self._reservoir, dtype=np.int64), recent, floors]))

    def bound(self, n_classes: int) -> int:
        """The most rows :meth:`rows` can return with ``n_classes`` classes."""
        return self.cap + n_classes * self.class_floor
