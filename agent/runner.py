"""Running the graph on batches for one project and policy version."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from agent.graph import LabelingGraph, build_graph, initial_state
from agent.learner import Learner
from agent.ports import BatchResult
from agent.queue_order import QueueRule, shape_batch
from agent.state import AgentContext, AgentSnapshot
from policies import Policy
from tools.base import Batch, Item, Tool, ToolContext


class BatchLabeler:
    """One project's agent: the compiled graph, its tools and its learner.

    ``run_batch`` is one graph run; the snapshot it reads (models, pool, threshold) is fixed for the whole run, so
    a retrain published meanwhile only affects the next batch.
    """

    def __init__(self, policy: Policy, tools: Sequence[Tool], *, seed: int = 0,
                 graph: LabelingGraph | None = None, queue: QueueRule | None = None) -> None:
        self.policy = policy
        self.learner = Learner(policy, tuple(tools))
        self.rng = np.random.default_rng(seed)
        self.tool_context = ToolContext(labels=tuple(policy.labels), rng=np.random.default_rng(seed + 1))
        self.graph = graph if graph is not None else build_graph()
        self.queue = queue if queue is not None else QueueRule()  # i20: what reaches a human, in which order

    @property
    def tools(self) -> tuple[Tool, ...]:
        """The tools deciding now (the published snapshot's)."""
        return self.learner.tools

    async def run_batch(self, items: Sequence[Item], snapshot: AgentSnapshot | None = None) -> BatchResult:
        """One graph run over ``items`` with ``snapshot`` (default: the learner's current one: models, pool and
        threshold published together, read once)."""
        snapshot = snapshot or self.learner.snapshot
        if not items:
            return BatchResult(self.policy.key, snapshot.threshold, {}, [], snapshot_id=snapshot.stored_id)
        context = AgentContext(self.policy, snapshot.tools or self.learner.tools, snapshot, self.rng,
                               self.tool_context, self.learner.monitor)
        out = await self.graph.ainvoke(initial_state(Batch(items), context), context=context)
        result: BatchResult = out["result"]
        learner = self.learner
        shape_batch(result.decisions, out["trace"], policy=self.policy, rule=self.queue, threshold=result.threshold,
                    outstanding=(learner.pending.outstanding("cold_start")  # a scan: only where the cap reads it
                                 if result.threshold is None and self.queue.sample_cold_start else 0),
                    label_counts=learner.label_counts(),
                    texts={item.key: item.text for item in items})
        self.learner.remember(out["trace"])
        self.learner.watch(result)  # i14: the label-free drift monitor sees every decision
        return result
