"""The table of the Label Studio bridge: every Label Studio annotation of an item as it came (import or webhook), so
that an export gives them all back (skipped ones, several annotators, ``created_at``, ``completed_by``,
``lead_time``) while labelagent's ground truth stays one ``human`` label per item: the label of the item's latest
annotation that is not skipped (:func:`service.api.labelstudio.latest_annotation`).

Importing :mod:`service.store` (or :func:`service.store.db.create_all`) registers the table on ``SQLModel.metadata``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Index
from sqlalchemy import UniqueConstraint as Unique
from sqlmodel import Field, SQLModel

from service.store.tables import JSONType, UTCDateTime, utcnow


class LabelStudioAnnotation(SQLModel, table=True):
    """One Label Studio annotation of an item. ``annotation_id`` is Label Studio's id (None for an imported
    annotation without one); ``label`` is the annotation's choice (None when skipped); ``result`` is kept as sent."""

    __tablename__ = "ls_annotation"
    __table_args__ = (
        Unique("item_id", "annotation_id", name="uq_ls_annotation_item_annotation"),
        Index("ix_ls_annotation_project_annotation", "project_id", "annotation_id"),
    )
    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id")
    item_id: int = Field(foreign_key="item.id")
    annotation_id: int | None = Field(default=None, sa_type=BigInteger)
    label: str | None = Field(default=None, max_length=128)
    was_cancelled: bool = False
    ground_truth: bool = False
    result: list[Any] = Field(default_factory=list, sa_type=JSONType)
    completed_by: Any = Field(default=None, sa_type=JSONType, nullable=True)
    lead_time: float | None = None
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
