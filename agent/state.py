"""Graph state, per-run context and the learner's immutable snapshot."""

from __future__ import annotations

import operator
from collections.abc import Iterable, Set
from dataclasses import dataclass, field
from typing import Annotated, TypedDict

import numpy as np

from agent.aggregate import AggregatorModel
from agent.calibration import CertificateState, ThresholdResult
from agent.drift import EscalationMonitor
from agent.ports import BatchResult, ReviewKind
from policies import Policy
from tools.base import Batch, ModelInfo, Preparing, Tool, ToolContext, Votes, is_enrichment


@dataclass(frozen=True, slots=True)
class AgentSnapshot:
    """What the learner last produced; a graph run reads one snapshot from start to end.

    ``tools`` are the tools that decide with it: a retrain fits copies of the learning tools and publishes them
    in the snapshot that holds the pool and the threshold made for them, so a freshly fitted model never decides
    under an older threshold (the old models keep deciding until the new snapshot is published). Empty in a
    snapshot built by hand (tests): the learner's own tools decide then."""

    aggregator: AggregatorModel
    calibration: ThresholdResult
    audit_rate: float
    tool_versions: dict[str, str] = field(default_factory=dict)
    version: int = 0
    drift: bool = False
    certifier: CertificateState | None = None  # i14: the certifier's state when published (persisted with it)
    stored_id: int | None = None  # i14: the id the store gave this snapshot (set by the service when persisted)
    tools: tuple[Tool, ...] = ()  # the models that decide with it (empty: the labeler's own tools)
    trained_on: int = 0  # ground-truth rows its learning models were fitted on (the pool weighs votes by it)

    @property
    def threshold(self) -> float | None:
        return self.calibration.threshold


@dataclass(frozen=True, slots=True)
class Retrained:
    """A finished retrain not yet in force: its snapshot (new models, pool, threshold), the model versions it fitted,
    and the drift monitor's new reference share (``None``: unchanged). ``Learner.publish`` puts it in force."""

    snapshot: AgentSnapshot
    infos: list[ModelInfo]
    reference: float | None = None


@dataclass(slots=True)
class AgentContext:
    """Per-run context (LangGraph ``context_schema``): nothing here is read from the environment."""

    policy: Policy
    tools: tuple[Tool, ...]
    snapshot: AgentSnapshot
    rng: np.random.Generator
    tool_context: ToolContext
    # i14: the drift monitor, asked before deciding (``agent.graph._drift_plan``); None: no monitor
    monitor: EscalationMonitor | None = None
    # per tool, asked once per run rather than at every planning step (a runtime protocol check costs ~20 us)
    enriching: tuple[bool, ...] = field(init=False)
    preparing: tuple[Preparing | None, ...] = field(init=False)

    def __post_init__(self) -> None:
        self.enriching = tuple(is_enrichment(t) for t in self.tools)
        self.preparing = tuple(t if isinstance(t, Preparing) else None for t in self.tools)


@dataclass(slots=True)
class ToolCall:
    """One ``act`` step: which tool ran on which rows of the batch, and what it said."""

    tool_index: int
    rows: np.ndarray
    votes: Votes


@dataclass(slots=True)
class ReviewTrace:
    """Decision-time evidence of the items sent to humans, kept for the learner.

    When the humans answer, these rows become training data for the aggregator (votes that were
    out of sample) and calibration records (confidence at decision time, right or wrong).
    """

    batch: Batch  # the reviewed items, with their cached features
    logp: np.ndarray  # (m, T, L)
    voted: np.ndarray  # (m, T)
    confidence: np.ndarray  # (m,)
    predicted: list[str | None]
    kinds: list[ReviewKind]
    would_accept: np.ndarray  # (m,) bool: confidence cleared the threshold (audits of auto labels)
    trained_on: int = 0  # ground-truth rows the deciding models were fitted on (``AgentSnapshot.trained_on``)


class BatchState(TypedDict, total=False):
    """State of one graph run over a batch. Arrays are row-aligned with ``batch``."""

    batch: Batch
    calls: Annotated[list[ToolCall], operator.add]
    called: np.ndarray  # (n, T) bool: tool t was asked about item i
    voted: np.ndarray  # (n, T) bool: ... and did not abstain
    logp: np.ndarray  # (n, T, L) log-probabilities of the votes
    spent: np.ndarray  # (n,) cost spent per item
    proba: np.ndarray  # (n, L) pooled probabilities
    open: np.ndarray  # (n,) bool: still undecided
    settled: np.ndarray  # (n,) bool: decided on the cheap tools' pool (agent.cascade)
    explore: np.ndarray  # (n,) bool: call every useful tool on this item
    next_tool: int | None
    next_rows: np.ndarray
    result: BatchResult
    trace: ReviewTrace


@dataclass(slots=True)
class PendingReview:
    """An item sent to review, kept by the learner until its answer arrives: its decision-time evidence."""

    source: Batch  # the review trace's batch (shared by the items of one graph run) ...
    row: int  # ... and this item's row in it
    logp: np.ndarray
    voted: np.ndarray
    confidence: float
    predicted: str | None
    kind: ReviewKind
    would_accept: bool
    trained_on: int = 0  # ground-truth rows the deciding models were fitted on


class PendingReviews(dict[str, PendingReview]):
    """The learner's items sent to humans and not answered yet, by item key (issue 20's counts and releases)."""

    def outstanding(self, kind: ReviewKind) -> int:
        """Items sent to humans as ``kind``, not answered yet."""
        return sum(1 for p in self.values() if p.kind == kind)

    def kind(self, key: str) -> ReviewKind | None:
        """The review kind ``key`` was sent as (None: this learner did not send it)."""
        p = self.get(key)
        return None if p is None else p.kind

    def forget(self, keys: Set[str]) -> None:
        """Items re-decided: the agent labeled them after all, no answer will come."""
        for key in keys & self.keys():
            del self[key]

    def release(self, keys: Iterable[str]) -> None:
        """Cold-start samples released into the queue (``agent/queue_order.py``): escalations from now on, their
        answers will not calibrate."""
        for key in keys:
            p = self.get(key)
            if p is not None:
                p.kind = "escalation"

    def promote(self, keys: Iterable[str]) -> None:
        """Waiting cold-start items promoted to calibration samples (``service/runtime/waiting.py``): their answers
        calibrate."""
        for key in keys:
            p = self.get(key)
            if p is not None and p.kind == "escalation":
                p.kind = "cold_start"
