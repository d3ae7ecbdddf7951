"""A control voter: a uniformly random label with a fixed strength. The agent must learn to ignore it.

Votes come from a numpy Generator seeded with ``spec.seed``, so a run that sends the same items in
the same order gets the same votes.
"""

from __future__ import annotations

import threading

import numpy as np

from policies.model import RandomSpec
from tools.base import Batch, ToolContext, Votes


class RandomVoter:
    """Tool (not learnable). Construct from the spec and the project's labels."""

    kind = "random"

    def __init__(self, spec: RandomSpec, labels: tuple[str, ...] | list[str]) -> None:
        self.spec = spec
        self.name = spec.name
        self.cost = spec.cost
        self.labels = tuple(labels)
        self.version = f"{self.name}-seed{spec.seed}"
        self._rng = np.random.default_rng(spec.seed)
        self._lock = threading.Lock()  # a Generator is not thread-safe

    async def predict(self, batch: Batch, context: ToolContext) -> Votes:
        labels = context.labels
        n, n_labels = len(batch), len(labels)
        with self._lock:
            chosen = self._rng.integers(0, n_labels, size=n)
        strength = self.spec.strength
        probs = np.full((n, n_labels), (1.0 - strength) / max(n_labels - 1, 1))
        probs[np.arange(n), chosen] = strength
        if n_labels == 1:
            probs[:] = 1.0
        evidence = [f"{self.name}: random {labels[c]} {strength:.2f} (control voter)" for c in chosen.tolist()]
        return Votes(self.name, probs, np.zeros(n, dtype=bool), np.full(n, self.cost, dtype=np.float64), evidence,
                     self.version)
