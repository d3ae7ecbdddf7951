"""Tables the operations API adds (same conventions as ``service.store.tables``): the audit log of every change an
operator or client makes, reviewers' skips of review tasks, the stored results of policy backtests, and the history of
label corrections.

Importing :mod:`service.store` (or :func:`service.store.db.create_all`) registers these tables on ``SQLModel.metadata``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Index, String, Text
from sqlalchemy import UniqueConstraint as Unique
from sqlmodel import Field, SQLModel

from service.store.tables import JSONType, UTCDateTime, _policy_fk, utcnow

AUDIT_ACTIONS = (
    "project.created",
    "policy.created",
    "policy.activated",
    "policy.rolled_back",
    "items.requeued",
    "policy.backtested",
    "label.corrected",
)


class AuditEventBase(SQLModel):
    action: str = Field(sa_type=String(32), description="What changed: " + ", ".join(AUDIT_ACTIONS) + ".")
    actor: str = Field(max_length=128, description="Who changed it (the caller's principal).")
    detail: dict[str, Any] = Field(default_factory=dict, sa_type=JSONType, description="Action-specific fields.")


class AuditEvent(AuditEventBase, table=True):
    """One change, written in the same transaction as the change itself; never updated or deleted."""

    __tablename__ = "audit_event"
    __table_args__ = (Index("ix_audit_event_project", "project_id", "id"),)
    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id")
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class AuditEventPublic(AuditEventBase):
    id: int
    created_at: datetime


class ReviewSkipBase(SQLModel):
    reviewer: str = Field(max_length=128)
    until: datetime = Field(sa_type=UTCDateTime, description="The task is not offered to this reviewer before then.")


class ReviewSkip(ReviewSkipBase, table=True):
    """A reviewer passed on a task: claims by that reviewer skip it until ``until``."""

    __tablename__ = "review_skip"
    __table_args__ = (Unique("task_id", "reviewer", name="uq_review_skip_task_reviewer"),)
    id: int | None = Field(default=None, primary_key=True)
    project_id: int  # the task's
    task_id: int = Field(foreign_key="review_task.id")
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class BacktestBase(SQLModel):
    policy_version: int = Field(description="The version backtested (the candidate).")
    active_version: int = Field(description="The version it was compared with: the one active when it ran.")
    requested_by: str = Field(max_length=128, description="Who ran it (the caller's principal).")
    limit: int = Field(description="Request: replay at most this many of the most recent ground-truth items.")
    batch_size: int = Field(description="Request: items per graph run.")
    seed: int = Field(sa_type=BigInteger, description="Request: the agent's random seed.")
    ground_truth: int = Field(description="Ground-truth items available to the replay (at most `limit`).")
    candidate: dict[str, Any] = Field(default_factory=dict, sa_type=JSONType,
                                      description="The candidate's replay summary "
                                                  "(``service.offline.replay.summarize``).")
    active: dict[str, Any] = Field(default_factory=dict, sa_type=JSONType,
                                   description="The active version's replay summary.")


class Backtest(BacktestBase, table=True):
    """One backtest's request and figures, written with its audit entry; never updated or deleted."""

    __tablename__ = "backtest"
    __table_args__ = (Index("ix_backtest_version", "project_id", "policy_version", "id"), _policy_fk("backtest"))
    id: int | None = Field(default=None, primary_key=True)
    project_id: int  # checked through the (project_id, policy_version) key
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class BacktestPublic(BacktestBase):
    id: int
    created_at: datetime


class LabelCorrectionBase(SQLModel):
    label: str = Field(max_length=128, description="The corrected label.")
    replaced_label_id: int = Field(description="Id of the label row this correction replaced (deleted then).")
    replaced_label: str = Field(max_length=128, description="The label it replaced.")
    replaced_source: str = Field(sa_type=String(8), description="Source of the replaced label: agent or human.")
    replaced_confidence: float | None = Field(default=None, description="Confidence of the replaced label.")
    reviewer: str = Field(max_length=128, description="Who corrected it (the request's reviewer).")
    note: str | None = Field(default=None, sa_type=Text, description="Why, as the reviewer wrote it.")
    actor: str = Field(max_length=128, description="The API key that sent the correction.")


class LabelCorrection(LabelCorrectionBase, table=True):
    """One correction of an item's label: the new ``human`` label's id and the label it replaced (the history; the
    label table keeps one row per item and policy version). Written with the new label and a ``label.corrected``
    audit entry in one transaction; never updated or deleted (a later correction adds a row)."""

    __tablename__ = "label_correction"
    __table_args__ = (
        Unique("label_id", name="uq_label_correction_label"),
        Index("ix_label_correction_item", "item_id", "id"),
        Index("ix_label_correction_project_source", "project_id", "replaced_source"),
        _policy_fk("label_correction"),
    )
    id: int | None = Field(default=None, primary_key=True)
    project_id: int  # checked through the (project_id, policy_version) key
    item_id: int = Field(foreign_key="item.id")
    policy_version: int
    label_id: int = Field(description="Id of the label row the correction wrote (no foreign key: a later "
                                      "correction or a Label Studio annotation may replace that row).")
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
