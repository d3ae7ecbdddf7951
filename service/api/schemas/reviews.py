"""The review queue: claim, heartbeat, submit, skip, release, and the operators' listing."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from agent.ports import ReviewKind
from service.api.schemas.common import Label, LeaseToken, Request, ReviewerName
from service.api.schemas.items import VoteOut
from service.store.tables import ReviewTaskPublic


class ClaimRequest(Request):
    reviewer: ReviewerName = Field(description="Who reviews; overlap needs answers from distinct reviewers.")


class ReviewItem(BaseModel):
    external_id: str
    text: str | None
    metadata: dict[str, Any]
    thumbnail_url: str | None = Field(default=None, description="Path of the item's image thumbnail (a small JPEG "
                                      "or PNG); null when the item has no image.")


class ClaimedTask(BaseModel):
    """A task leased to the reviewer. For audits (``kind == "audit"``) the agent's view is hidden."""

    task_id: int
    lease_token: str = Field(description="Send it back with heartbeat, submit, skip and release.")
    lease_expires_at: datetime
    kind: ReviewKind
    priority: float
    policy_version: int
    answers_needed: int
    answers: int
    labels: list[str] = Field(description="The labels to choose from.")
    item: ReviewItem
    suggestion: str | None = Field(description="The agent's label (None for audits).")
    confidence: float | None = Field(description="The agent's confidence (None for audits).")
    evidence: list[VoteOut] | None = Field(description="Each tool's vote (None for audits).")


class LeaseRequest(Request):
    lease_token: LeaseToken


class HeartbeatResponse(BaseModel):
    task_id: int
    lease_expires_at: datetime


class SubmitRequest(Request):
    lease_token: LeaseToken
    label: Label


class SubmitResponse(BaseModel):
    task_id: int
    external_id: str
    label: str = Field(description="This reviewer's answer.")
    settled: bool = Field(description="True when the item is now labeled (enough reviewers answered).")
    final_label: str | None = Field(description="The item's label once settled (majority of the answers).")


class SkipRequest(Request):
    lease_token: LeaseToken
    seconds: int = Field(default=900, ge=1, le=86_400, description="How long the task is not offered to you again.")


class SkipResponse(BaseModel):
    task_id: int
    status: Literal["open"] = "open"
    skipped_until: datetime


class ReleaseResponse(BaseModel):
    task_id: int
    status: Literal["open"] = "open"


class QueueEntry(ReviewTaskPublic):
    external_id: str


class QueuePage(BaseModel):
    tasks: list[QueueEntry]
    total: int = Field(description="Tasks matching the filters.")
    offset: int
    limit: int
