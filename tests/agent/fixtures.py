"""Deterministic tools for routing tests: each votes from a table the test writes.

These are real implementations of the tool interface (not mocks of agent code): the graph's
routing is what is under test, and it needs voters whose answers the test controls.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from policies import ToolError
from tools.base import Batch, ModelInfo, ToolContext, TrainingSet, Votes


class TableTool:
    """Votes ``table[item.key]`` (a label -> probability mapping), abstains on unknown keys."""

    kind = "table"

    def __init__(self, name: str, table: Mapping[str, Mapping[str, float]], *, cost: float = 1.0,
                 fail: bool = False) -> None:
        self.name = name
        self.table = dict(table)
        self.cost = cost
        self.fail = fail
        self.seen: list[str] = []

    async def predict(self, batch: Batch, context: ToolContext) -> Votes:
        if self.fail:
            raise ToolError(f"{self.name} is down")
        labels = context.labels
        n = len(batch)
        probs = np.full((n, len(labels)), 1.0 / len(labels))
        abstain = np.ones(n, dtype=bool)
        for i, item in enumerate(batch.items):
            self.seen.append(item.key)
            dist = self.table.get(item.key)
            if dist is not None:
                probs[i] = [dist.get(lab, 0.0) for lab in labels]
                probs[i] /= probs[i].sum()
                abstain[i] = False
        return Votes(self.name, probs, abstain, np.full(n, self.cost), [f"{self.name} table"] * n)


class CountingLearner(TableTool):
    """A table tool that also counts its fits (for learner tests)."""

    def __init__(self, *args, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.fits: list[int] = []

    @property
    def version(self) -> str:
        return f"{self.name}-v{len(self.fits)}"

    def fit(self, data: TrainingSet) -> ModelInfo:
        self.fits.append(len(data))
        return ModelInfo(self.name, self.version, len(data))

    def fork(self) -> CountingLearner:
        return CountingLearner(self.name, self.table, cost=self.cost)
