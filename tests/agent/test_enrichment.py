"""Enrichment tools (``tool.enriches``) run before the voters, even when expensive or without weight."""

from __future__ import annotations

import asyncio

import numpy as np

from agent.aggregate import AggregatorModel
from agent.calibration import ThresholdResult
from agent.runner import BatchLabeler
from agent.state import AgentSnapshot
from policies import ToolError
from tests.agent.fixtures import TableTool
from tests.factories import make_items, make_policy
from tools.base import Batch, ToolContext, Votes


class Enricher:
    """Writes ``metadata['wx']`` and abstains; records the order in which tools ran."""

    kind = "enricher"
    enriches = True

    def __init__(self, log: list[str], *, cost: float = 5.0, fail: bool = False) -> None:
        self.name, self.cost, self.log, self.fail = "enrich", cost, log, fail

    async def predict(self, batch: Batch, context: ToolContext) -> Votes:
        self.log.append(self.name)
        if self.fail:
            raise ToolError("weather unavailable: HTTP 503")
        for item in batch.items:
            item.metadata["wx"] = 1.0
        return Votes.abstaining(self.name, len(batch), len(context.labels), "enriched", cost=self.cost)


class ReadsMetadata(TableTool):
    def __init__(self, log: list[str], items) -> None:  # type: ignore[no-untyped-def]
        super().__init__("voter", {it.key: {"ham": 0.999, "spam": 0.001} for it in items}, cost=0.5)
        self.log = log
        self.saw_wx: list[bool] = []

    async def predict(self, batch: Batch, context: ToolContext) -> Votes:
        self.log.append(self.name)
        self.saw_wx.extend("wx" in it.metadata for it in batch.items)
        return await super().predict(batch, context)


def labeler(tools, weights) -> BatchLabeler:  # type: ignore[no-untyped-def]
    specs = [{"name": t.name, "kind": "text_classifier", "cost": t.cost} for t in tools]
    policy = make_policy(tools=specs, audit_rate=0.0, planner={"explore_rate": 0.0})
    lab = BatchLabeler(policy, tools, seed=0)
    agg = AggregatorModel(tuple(t.name for t in tools), np.asarray(weights, float), 0.0, np.log(np.full(2, 0.5)),
                          votes_seen=np.full(len(tools), 1000))
    lab.learner.snapshot = AgentSnapshot(agg, ThresholdResult(0.99, 500, 500, 0, 0.01), 0.0)
    return lab


def test_enrichment_runs_first_even_without_weight() -> None:
    items = make_items(6)
    log: list[str] = []
    voter = ReadsMetadata(log, items)
    lab = labeler([voter, Enricher(log)], weights=[1.0, 0.0])  # the voter is cheaper and weighs more
    result = asyncio.run(lab.run_batch(items))
    assert log == ["enrich", "voter"]
    assert voter.saw_wx == [True] * 6
    assert result.tool_calls == {"voter": 6, "enrich": 6}
    assert all(d.action == "accept" for d in result.decisions)


def test_failing_enrichment_degrades_to_the_voters() -> None:
    items = make_items(4)
    log: list[str] = []
    voter = ReadsMetadata(log, items)
    result = asyncio.run(labeler([Enricher(log, fail=True), voter], weights=[0.0, 1.0]).run_batch(items))
    assert len(result.decisions) == 4 and voter.saw_wx == [False] * 4
    assert all(d.action == "accept" for d in result.decisions)  # the voters read the items without the values
    assert all(any(v.tool == "enrich" and v.abstained and "HTTP 503" in v.evidence for v in d.votes)
               for d in result.decisions)
