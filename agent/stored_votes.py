"""The votes a decision carries, as the store keeps them: per item, each tool's distribution (the top labels only
for large label sets), its cost and evidence. :func:`agent.persist.vote_arrays` reads them back for the learner."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from agent.state import ToolCall
from tools.base import Tool, Vote

EVIDENCE_TOP = 5  # labels kept per stored vote distribution (plus all with p >= 1%)


def sparse_distribution(labels: tuple[str, ...], probs: np.ndarray, values: list[float]) -> dict[str, float]:
    """A stored vote's distribution: every label (few labels), or the top ones and all with p >= 1%; ``values`` is
    ``probs`` as Python floats (``tolist`` once per call: rounding numpy scalars one by one cost more)."""
    if len(labels) <= EVIDENCE_TOP * 2:
        return {lab: round(p, 5) for lab, p in zip(labels, values, strict=True)}
    top = np.argsort(-probs)[:EVIDENCE_TOP]
    keep = set(top.tolist()) | set(np.nonzero(probs >= 0.01)[0].tolist())
    return {labels[i]: round(values[i], 5) for i in sorted(keep, key=lambda i: -values[i])}


def item_votes(calls: Sequence[ToolCall], tools: Sequence[Tool], labels: tuple[str, ...], n: int) -> list[list[Vote]]:
    """Each of the ``n`` items' votes, in the order the tools were called (an abstention without a distribution)."""
    out: list[list[Vote]] = [[] for _ in range(n)]
    for call in calls:
        v = call.votes
        name = tools[call.tool_index].name
        abstain, cost, values = v.abstain.tolist(), v.cost.tolist(), v.probs.tolist()
        for j, row in enumerate(call.rows.tolist()):
            dist = None if abstain[j] else sparse_distribution(labels, v.probs[j], values[j])
            out[row].append(Vote(name, dist, float(cost[j]), v.evidence[j]))
    return out


def tool_report(calls: Sequence[ToolCall], tools: Sequence[Tool]) -> tuple[dict[str, int], dict[str, str]]:
    """(items each tool was asked about, and for each tool whose call raised, why: its first failed call's reason)."""
    asked: dict[str, int] = {tool.name: 0 for tool in tools}
    failed: dict[str, str] = {}
    for call in calls:
        name = tools[call.tool_index].name
        asked[name] += len(call.rows)
        if call.votes.failed and len(call.votes):
            failed.setdefault(name, call.votes.evidence[0])
    return asked, failed
