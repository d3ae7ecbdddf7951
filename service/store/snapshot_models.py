"""The table of certified snapshots (issue 14): every snapshot a worker decided with, persisted before its first
batch, so a restarted worker (or a second one joining) decides with the same certificate, and every auto label and
audit names the snapshot that decided it (``label.snapshot_id``, ``review_task.snapshot_id``).

Importing :mod:`service.store` (or :func:`service.store.db.create_all`) registers the table on ``SQLModel.metadata``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Index
from sqlmodel import Field, SQLModel

from service.store.tables import JSONType, UTCDateTime, utcnow


class AgentSnapshotTable(SQLModel, table=True):
    """One published snapshot: its certificate (``threshold`` None: none in force) and, in ``state``, the document of
    ``agent.persist.snapshot_state`` (pool weights, certificate counts, the certifier's tests and spending)."""

    __tablename__ = "agent_snapshot"
    __table_args__ = (Index("ix_agent_snapshot_project_version", "project_id", "policy_version", "id"),)
    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id")
    policy_version: int
    learner_version: int  # the publishing learner's own snapshot counter
    threshold: float | None = None
    n_calibration: int = 0
    n_above: int = 0
    errors_above: int = 0
    worker: str = Field(default="", max_length=128)
    state: dict[str, Any] = Field(default_factory=dict, sa_type=JSONType)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
