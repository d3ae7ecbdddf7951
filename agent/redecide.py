"""Deciding again what waits for a human, with a new certified snapshot (issue 20).

An escalation waits in the review queue until a human answers it. When the learner publishes a snapshot with a
certificate, the items still waiting (open escalations: not calibration samples, not audits, not claimed) go
through the same graph run as new items, under that snapshot, without the audit draw: the audit sample is a
uniform draw of the stream at arrival, and the waiting items are not one. Those whose pooled confidence now clears
the certified threshold *and* the target precision (``1 - alpha``) are auto-labeled; the others get fresh queue
priorities (``agent/queue_order.py``). The second bar is there because the waiting items are not a uniform part of
the stream: they sit just above the threshold, where the error is higher than the certificate's average above it
(DESIGN-NOTES section 16 measures it).
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace

import numpy as np

from agent.graph import initial_state
from agent.ports import Decision
from agent.queue_order import prioritize
from agent.runner import BatchLabeler
from agent.state import AgentContext, AgentSnapshot
from tools.base import Batch, Item

REDECIDE_BATCH = 1024  # waiting items per graph run


@dataclass(slots=True)
class Redecision:
    """What a snapshot decided about waiting items: accepts (auto labels) and the rest (fresh priorities)."""

    snapshot: AgentSnapshot
    accepted: list[Decision]
    waiting: list[Decision]


def due(labeler: BatchLabeler, last: AgentSnapshot | None) -> bool:
    """Whether the current snapshot should re-decide the queue: it holds a certificate, and it is the first one,
    or its scorer changed (a retrain: new model versions) or its threshold went down since ``last``."""
    snap = labeler.learner.snapshot
    if not labeler.queue.redecide or snap.threshold is None:
        return False
    if last is None or last.threshold is None:
        return True
    changed = {k: v for k, v in snap.tool_versions.items() if k != "calibration"} != {
        k: v for k, v in last.tool_versions.items() if k != "calibration"}
    return changed or snap.threshold < last.threshold


def _escalated(d: Decision, bar: float) -> Decision:
    """An item the snapshot would accept as a new item, kept waiting: under the re-decision's bar."""
    return replace(d, action="escalate", review_kind="escalation",
                   reason=f"re-decision: confidence {d.confidence:.3f} < {bar:.3f}", priority=1.0 - d.confidence)


async def redecide(labeler: BatchLabeler, items: Sequence[Item], *, seed: int = 0,
                   unscreened: Collection[str] = frozenset()) -> Redecision:
    """Run the graph on the waiting ``items`` under the learner's current snapshot (no audits) and order what stays.

    Nothing is accepted without a certificate: with no threshold every item stays waiting. Items whose keys are in
    ``unscreened`` (waited through cold start) need the certified threshold; the others also ``1 - alpha``.
    """
    snap = labeler.learner.snapshot
    if snap.threshold is None or not items:
        return Redecision(snap, [], [])
    context = AgentContext(labeler.policy, labeler.tools, replace(snap, audit_rate=0.0),
                           np.random.default_rng([seed, snap.version]), labeler.tool_context)
    decisions: list[Decision] = []
    for start in range(0, len(items), REDECIDE_BATCH):
        batch = Batch(list(items[start:start + REDECIDE_BATCH]))
        out = await labeler.graph.ainvoke(initial_state(batch, context), context=context)
        decisions.extend(out["result"].decisions)
    screened_bar = max(snap.threshold, labeler.policy.target_precision)
    accepted: list[Decision] = []
    waiting: list[Decision] = []
    for d in decisions:
        bar = snap.threshold if d.key in unscreened else screened_bar
        if d.action != "accept":
            waiting.append(d)
        elif d.confidence >= bar:
            accepted.append(d)
        else:
            waiting.append(_escalated(d, bar))
    if labeler.queue.order:
        prioritize(waiting, policy=labeler.policy, label_counts=labeler.learner.label_counts(),
                   texts={item.key: item.text for item in items})
    return Redecision(snap, accepted, waiting)
