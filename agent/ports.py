"""What the agent hands to storage and reads back: plain data types (the agent never imports ``service``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from tools.base import Item, Vote

Action = Literal["accept", "escalate", "audit"]
ReviewKind = Literal["cold_start", "escalation", "audit"]
# The reviews that sample the stream uniformly: their answers calibrate the certificate, so they are given blind
# (the reviewer sees no agent label, confidence or votes).
CALIBRATION_KINDS: tuple[ReviewKind, ...] = ("cold_start", "audit")
# Cold-start items past the samples' cap wait for the agent (``agent/queue_order.py``): never handed to reviewers,
# promoted to samples when none is left unanswered, decided again under the first certificate.
WAITING_REASON = "cold start: waiting for the agent (not a calibration sample)"
RELEASED_REASON = "cold start: a certificate came before a reviewer (released, not a calibration sample)"


@dataclass(slots=True)
class Decision:
    """The agent's decision on one item, with everything needed to explain and re-derive it.

    ``accept``: auto-labeled with ``label``. ``escalate``: a human decides; ``label`` is the
    agent's suggestion (None if it has none). ``audit``: would have been accepted, sent to a human
    with the suggestion hidden, to measure precision.
    """

    key: str
    action: Action
    label: str | None
    confidence: float
    votes: list[Vote]
    reason: str
    cost: float
    review_kind: ReviewKind | None = None  # for escalate/audit: why a human sees it
    priority: float = 0.0  # higher first in the review queue


@dataclass(slots=True)
class BatchResult:
    """One graph run's output: one decision per input item, in input order."""

    policy_key: str
    threshold: float | None
    model_versions: dict[str, str]
    decisions: list[Decision]
    tool_calls: dict[str, int] = field(default_factory=dict)
    snapshot_id: int | None = None  # i14: the stored id of the snapshot that decided (AgentSnapshot.stored_id)
    tool_failures: dict[str, str] = field(default_factory=dict)  # tool -> why its call raised in this run

    def by_action(self, action: Action) -> list[Decision]:
        return [d for d in self.decisions if d.action == action]


@dataclass(slots=True, frozen=True)
class CalibrationRecord:
    """(confidence at decision time, was the agent's label right?) for one human-reviewed item."""

    key: str
    confidence: float
    predicted: str | None
    truth: str
    kind: ReviewKind
    seq: int = 0  # arrival order, for recent windows

    @property
    def correct(self) -> bool:
        return self.predicted == self.truth


@dataclass(slots=True, frozen=True)
class GroundTruth:
    """A human answer that settles an item's label. ``correction``: the label corrects an earlier one after the fact
    (training data, never calibration data: corrections are not a uniform sample of the stream)."""

    item: Item
    label: str
    reviewer: str = "human"
    correction: bool = False
