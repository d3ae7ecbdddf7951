"""Plain results the store returns (besides the agent's own types from ``agent.ports``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from agent.ports import GroundTruth
from tools.base import Item, Vote


@dataclass(slots=True, frozen=True)
class IngestResult:
    """``inserted`` new items; ``duplicates`` are external ids already stored (or repeated in the call)."""

    inserted: int
    duplicates: list[str] = field(default_factory=list)
    first_seq: int | None = None  # seq of the first inserted item; seqs follow input order (with gaps)


@dataclass(slots=True, frozen=True)
class RecordResult:
    """What ``record_batch`` wrote. ``fenced`` keys were not written: unknown, not leased with the given
    token, lease expired, or already decided."""

    labeled: int
    queued: int
    votes: int
    fenced: list[str] = field(default_factory=list)


@dataclass(slots=True, frozen=True)
class ClaimedReview:
    """A review task under a reviewer's lease. ``suggestion``/``confidence`` are the agent's at decision
    time; the API must hide them when ``kind == "audit"``."""

    task_id: int
    token: str
    item: Item
    kind: str
    priority: float
    suggestion: str | None
    confidence: float
    policy_version: int
    reviewer: str
    answers_needed: int
    answers: int
    lease_expires_at: datetime
    item_id: int | None = None  # the item's row id (internal)
    has_image: bool = False  # the item's image bytes are not loaded (``item.image`` is None); see the thumbnail


@dataclass(slots=True, frozen=True)
class ReviewView:
    """A claimed task as the claim route shows it: the labels of its policy version, and the votes at decision time
    (None for an audit)."""

    task: ClaimedReview
    labels: list[str]
    votes: list[Vote] | None


@dataclass(slots=True, frozen=True)
class TaskKey:
    """What never changes on a review task: its project (name), policy version and item (external id)."""

    task_id: int
    project: str
    policy_version: int
    external_id: str


@dataclass(slots=True, frozen=True)
class ReviewAnswer:
    """One answer for ``submit_reviews``: the task, the lease token from the claim, the label."""

    task_id: int
    token: str
    label: str


@dataclass(slots=True)
class SubmitResult:
    """``answers``: one ground truth per submitted answer (that reviewer's label). ``settled``: items whose
    task is now done, with the final label (majority of the reviews; equal to the answer when overlap is 1)."""

    answers: list[GroundTruth] = field(default_factory=list)
    settled: list[GroundTruth] = field(default_factory=list)
