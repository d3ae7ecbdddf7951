"""What the agent hands to storage and reads back: plain data types and one small protocol.

``service/`` implements :class:`AgentStore`; the agent never imports ``service``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

from tools.base import Item, ModelInfo, Vote

Action = Literal["accept", "escalate", "audit"]
ReviewKind = Literal["cold_start", "escalation", "audit"]


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


class AgentStore(Protocol):
    """The storage the agent needs. Implementations write in bulk, one transaction per call."""

    def record_batch(self, project: str, result: BatchResult) -> None:
        """Store labels, votes, review tasks and item states for a batch, atomically."""
        ...

    def load_ground_truth(self, project: str, limit: int | None = None) -> list[GroundTruth]:
        """Human-settled items, oldest first (the most recent ``limit`` when given)."""
        ...

    def load_calibration(self, project: str, limit: int) -> list[CalibrationRecord]:
        """The most recent calibration records, oldest first."""
        ...

    def save_model_version(self, project: str, policy_key: str, info: ModelInfo) -> None:
        """Remember a trained model (or calibration) version."""
        ...
