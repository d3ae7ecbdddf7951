"""Deterministic tools for backtests over HTTP (real implementations of the tool interface)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from policies import Policy
from tools.base import Batch, ToolContext, Votes


class KeywordTool:
    """Votes ``spam`` with ``strength`` when the text mentions a keyword, else ``ham`` with ``strength``."""

    kind = "keyword"

    def __init__(self, name: str, keywords: Sequence[str] = ("win", "free"), *, strength: float = 0.9,
                 cost: float = 0.1) -> None:
        self.name = name
        self.keywords = tuple(keywords)
        self.strength = strength
        self.cost = cost

    async def predict(self, batch: Batch, context: ToolContext) -> Votes:
        labels = context.labels
        n = len(batch)
        probs = np.full((n, len(labels)), (1.0 - self.strength) / (len(labels) - 1))
        for i, text in enumerate(batch.texts):
            hit = any(k in text for k in self.keywords)
            probs[i, labels.index("spam" if hit else "ham")] = self.strength
        return Votes(self.name, probs, np.zeros(n, dtype=bool), np.full(n, self.cost), [f"{self.name} keywords"] * n)


def keyword_tools(policy: Policy) -> list[KeywordTool]:
    """One keyword voter per enabled tool of the policy (same names, so the learner can weigh them)."""
    return [KeywordTool(spec.name, cost=spec.cost) for spec in policy.enabled_tools()]
