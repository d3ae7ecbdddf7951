"""Tables (SQLModel) and their API shapes: ``XBase`` (shared fields), ``X`` (the table) and ``XPublic`` (what the
API returns). The tables whose names the agent's domain types take (``Item``, ``Vote``, ``Label``,
``CalibrationRecord``) are ``ItemTable``, ``VoteTable``, ``LabelTable`` and ``CalibrationTable``.

Conventions: times are aware UTC datetimes (see :class:`UTCDateTime`); every row carries ``project_id`` so projects
stay isolated and every hot query filters on it first; ``policy_version`` is the version number
within the project, and together with ``project_id`` it references ``policy_version``. JSON columns
are JSONB on PostgreSQL. The store writes the hot tables with SQLAlchemy Core in bulk; the classes
here define the schema and serve the API.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, Literal, get_args

from sqlalchemy import (
    JSON,
    BigInteger,
    CheckConstraint,
    DateTime,
    Dialect,
    ForeignKeyConstraint,
    Index,
    LargeBinary,
    String,
    Text,
    TypeDecorator,
)
from sqlalchemy import UniqueConstraint as Unique
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

from agent.ports import ReviewKind

JSONType = JSON(none_as_null=True).with_variant(JSONB(none_as_null=True), "postgresql")  # None -> SQL NULL

ItemStatus = Literal["pending", "leased", "labeled", "in_review", "failed"]
TaskStatus = Literal["open", "claimed", "done"]
LabelSource = Literal["agent", "human"]
# The CHECK constraints' values, read from the types (ReviewKind is the agent's).
ITEM_STATUSES: tuple[str, ...] = get_args(ItemStatus)
TASK_STATUSES: tuple[str, ...] = get_args(TaskStatus)
REVIEW_KINDS: tuple[str, ...] = get_args(ReviewKind)
LABEL_SOURCES: tuple[str, ...] = get_args(LabelSource)


def utcnow() -> datetime:
    """Now, timezone-aware in UTC: the form every timestamp column takes and returns."""
    return datetime.now(UTC)


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in and out on every backend (SQLite keeps no offset; naive input means UTC)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def _one_of(column: str, values: tuple[str, ...], name: str) -> CheckConstraint:
    return CheckConstraint(f"{column} IN ({', '.join(repr(v) for v in values)})", name=name)


def _policy_fk(table: str) -> ForeignKeyConstraint:
    return ForeignKeyConstraint(
        ["project_id", "policy_version"], ["policy_version.project_id", "policy_version.version"],
        name=f"fk_{table}_policy_version",
    )


# --- projects and policies -------------------------------------------------------------------------


class ProjectBase(SQLModel):
    name: str = Field(max_length=64, unique=True, regex=r"^[a-z0-9][a-z0-9_-]*$")
    data_kind: str = Field(default="text", max_length=16)


class Project(ProjectBase, table=True):
    __tablename__ = "project"
    id: int | None = Field(default=None, primary_key=True)
    active_version: int | None = None
    item_seq: int = Field(default=0, sa_type=BigInteger, description="Last seq handed to an item.")
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class ProjectPublic(ProjectBase):
    id: int
    active_version: int | None
    created_at: datetime


class PolicyVersionBase(SQLModel):
    version: int = Field(ge=1)
    yaml: str = Field(sa_type=Text)


class PolicyVersion(PolicyVersionBase, table=True):
    """One immutable policy version; the store never updates or deletes these rows."""

    __tablename__ = "policy_version"
    __table_args__ = (Unique("project_id", "version", name="uq_policy_version"),)
    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id")
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class PolicyVersionPublic(PolicyVersionBase):
    project_id: int
    created_at: datetime


# --- items -----------------------------------------------------------------------------------------


class ItemBase(SQLModel):
    external_id: str = Field(min_length=1, max_length=256)
    text: str | None = Field(default=None, sa_type=Text)
    meta: dict[str, Any] = Field(default_factory=dict, sa_type=JSONType)
    client_label: str | None = Field(default=None, max_length=128)


class ItemTable(ItemBase, table=True):
    __tablename__ = "item"
    __table_args__ = (
        Unique("project_id", "external_id", name="uq_item_external_id"),
        Index("ix_item_claim", "project_id", "status", "seq"),
        _one_of("status", ITEM_STATUSES, "ck_item_status"),
    )
    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id")
    status: str = Field(default="pending", sa_type=String(16))
    lease_owner: str | None = Field(default=None, max_length=128)
    lease_token: str | None = Field(default=None, max_length=64)
    lease_expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    attempts: int = 0
    error: str | None = Field(default=None, sa_type=Text)  # why the last run with this item failed
    seq: int = Field(default=0, sa_type=BigInteger)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class ItemImage(SQLModel, table=True):
    """An item's image, apart from the item row so that item scans and claims stay small: the file's bytes as
    received (validated at ingest when it came through the API) and a reviewer thumbnail (made at ingest, or on
    first request for images stored another way)."""

    __tablename__ = "item_image"
    item_id: int = Field(primary_key=True, foreign_key="item.id", sa_column_kwargs={"autoincrement": False})
    project_id: int
    data: bytes = Field(sa_type=LargeBinary)
    thumbnail: bytes | None = Field(default=None, sa_type=LargeBinary)


class ItemPublic(ItemBase):
    id: int
    project_id: int
    status: ItemStatus
    lease_owner: str | None
    lease_expires_at: datetime | None
    attempts: int
    error: str | None = None
    seq: int
    created_at: datetime
    updated_at: datetime


# --- the agent's output: votes and labels ------------------------------------------------------------


class VoteBase(SQLModel):
    tool: str = Field(max_length=64)
    distribution: dict[str, float] | None = Field(default=None, sa_type=JSONType, description="None = abstain.")
    cost: float = 0.0
    evidence: str = Field(default="", sa_type=Text)
    model_version: str | None = Field(default=None, max_length=128)


class VoteTable(VoteBase, table=True):
    __tablename__ = "vote"
    __table_args__ = (Index("ix_vote_item", "item_id"),)
    id: int | None = Field(default=None, primary_key=True)
    project_id: int  # no foreign keys but item's: PostgreSQL checks each one per row (measured ~5 us/row/key)
    item_id: int = Field(foreign_key="item.id")
    policy_version: int


class VotePublic(VoteBase):
    id: int
    item_id: int
    policy_version: int


class LabelBase(SQLModel):
    label: str = Field(max_length=128)
    confidence: float | None = None


class LabelTable(LabelBase, table=True):
    """An item's label under one policy version; the DB refuses a second one (uq_label_item_version)."""

    __tablename__ = "label"
    __table_args__ = (
        Unique("item_id", "policy_version", name="uq_label_item_version"),
        Index("ix_label_project_source", "project_id", "source", "id"),
        _policy_fk("label"),
        _one_of("source", LABEL_SOURCES, "ck_label_source"),
    )
    id: int | None = Field(default=None, primary_key=True)
    project_id: int  # checked through the (project_id, policy_version) key
    item_id: int = Field(foreign_key="item.id")
    policy_version: int
    source: str = Field(sa_type=String(8))
    threshold: float | None = None
    cost: float = 0.0
    reason: str = Field(default="", sa_type=Text)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    snapshot_id: int | None = None  # i14: the certified snapshot that decided an agent label (agent_snapshot.id)


class LabelPublic(LabelBase):
    id: int
    item_id: int
    policy_version: int
    source: LabelSource
    threshold: float | None
    created_at: datetime
    snapshot_id: int | None = None


# --- the review queue --------------------------------------------------------------------------------


class ReviewTaskBase(SQLModel):
    kind: str = Field(sa_type=String(16))
    priority: float = 0.0
    suggestion: str | None = Field(default=None, max_length=128)
    confidence: float = 0.0


class ReviewTask(ReviewTaskBase, table=True):
    """One item waiting for ``answers_needed`` distinct reviewers. ``suggestion`` and ``confidence``
    are the agent's at decision time (the API hides them for audits)."""

    __tablename__ = "review_task"
    __table_args__ = (
        Unique("item_id", "policy_version", name="uq_review_task_item_version"),
        _policy_fk("review_task"),
        _one_of("status", TASK_STATUSES, "ck_review_task_status"),
        _one_of("kind", REVIEW_KINDS, "ck_review_task_kind"),
    )
    id: int | None = Field(default=None, primary_key=True)
    project_id: int  # checked through the (project_id, policy_version) key
    item_id: int = Field(foreign_key="item.id")
    policy_version: int
    reason: str = Field(default="", sa_type=Text)
    status: str = Field(default="open", sa_type=String(8))
    reviewer: str | None = Field(default=None, max_length=128)
    lease_token: str | None = Field(default=None, max_length=64)
    lease_expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    answers_needed: int = 1
    answers: int = 0
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    snapshot_id: int | None = None  # i14: the snapshot that decided it (for an audit: the one that would auto-label)


# claim order: highest priority first, then oldest
Index("ix_review_task_claim", ReviewTask.project_id, ReviewTask.status,  # type: ignore[arg-type]  # SQLModel columns
      ReviewTask.priority.desc(), ReviewTask.id)  # type: ignore[arg-type, attr-defined]


class ReviewTaskPublic(ReviewTaskBase):
    id: int
    item_id: int
    policy_version: int
    status: TaskStatus
    reviewer: str | None
    lease_expires_at: datetime | None
    answers_needed: int
    answers: int
    created_at: datetime


class ReviewBase(SQLModel):
    label: str = Field(max_length=128)


class Review(ReviewBase, table=True):
    """One reviewer's answer: ground truth."""

    __tablename__ = "review"
    __table_args__ = (Unique("task_id", "reviewer", name="uq_review_task_reviewer"), Index("ix_review_item", "item_id"))
    id: int | None = Field(default=None, primary_key=True)
    project_id: int  # the task's
    task_id: int = Field(foreign_key="review_task.id")
    item_id: int = Field(foreign_key="item.id")
    reviewer: str = Field(max_length=128)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


# --- learning ----------------------------------------------------------------------------------------


class ModelVersionBase(SQLModel):
    tool: str = Field(max_length=64)
    version: str = Field(max_length=128)
    trained_on: int = 0
    metrics: dict[str, float] = Field(default_factory=dict, sa_type=JSONType)


class ModelVersion(ModelVersionBase, table=True):
    __tablename__ = "model_version"
    __table_args__ = (Unique("project_id", "policy_key", "tool", "version", name="uq_model_version"),)
    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id")
    policy_key: str = Field(max_length=96)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class ModelVersionPublic(ModelVersionBase):
    id: int
    policy_key: str
    created_at: datetime


class CalibrationRecordBase(SQLModel):
    item_key: str = Field(max_length=256)
    confidence: float
    predicted: str | None = Field(default=None, max_length=128)
    truth: str = Field(max_length=128)
    kind: str = Field(sa_type=String(16))
    seq: int = Field(default=0, sa_type=BigInteger)


class CalibrationTable(CalibrationRecordBase, table=True):
    """(decision-time confidence, suggestion, human truth) for one settled review task."""

    __tablename__ = "calibration_record"
    __table_args__ = (
        Index("ix_calibration_project_seq", "project_id", "seq"),
        _policy_fk("calibration_record"),
        _one_of("kind", REVIEW_KINDS, "ck_calibration_kind"),
    )
    id: int | None = Field(default=None, primary_key=True)
    project_id: int  # checked through the (project_id, policy_version) key
    item_id: int = Field(foreign_key="item.id")
    policy_version: int
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
