"""The SQL store: ``SqlStore(engine)`` holds five repositories by aggregate (``items``, ``reviews``,
``learning``, ``projects``, ``audit``; see :mod:`service.store.repositories`) over one engine. One transaction per
call; hot paths write with SQLAlchemy Core in bulk. Tables: ``tables``, ``ops_models``, ``auth_models``,
``labelstudio_models``; engines and transactions: ``db``; schema migrations: ``migrate`` and ``migrations/``.
"""

from __future__ import annotations

from sqlalchemy import Engine

from service.settings import Settings
from service.store.base import StoreBase
from service.store.batches import parse_policy_key
from service.store.corrections import Correction, CorrectionOutcome
from service.store.feed import FedAnswer
from service.store.listing import ItemRow
from service.store.queue_admin import TaskRef
from service.store.reads import ItemView, LabelRow
from service.store.repositories import (
    AuditRepository,
    ItemsRepository,
    LearningRepository,
    ProjectsRepository,
    ReviewsRepository,
)
from service.store.snapshots import SnapshotSummary, StoredSnapshot
from service.store.types import (
    ClaimedReview,
    IngestResult,
    RecordResult,
    ReviewAnswer,
    ReviewView,
    SubmitResult,
    TaskKey,
)


class SqlStore(StoreBase):
    """Storage over one SQLAlchemy engine (SQLite or PostgreSQL): five repositories by aggregate sharing the
    engine and the caches of immutable rows (project ids, parsed policy versions, built statements) held here
    (:class:`StoreBase`: the plumbing the Label Studio functions of ``labelstudio`` and ``ls_annotations`` use
    too). Thread-safe: no per-call state is kept."""

    def __init__(self, engine: Engine, settings: Settings | None = None) -> None:
        super().__init__(engine, settings)
        self.items = ItemsRepository.sharing(self)
        self.reviews = ReviewsRepository.sharing(self)
        self.learning = LearningRepository.sharing(self)
        self.projects = ProjectsRepository.sharing(self)
        self.audit = AuditRepository.sharing(self)

    def stats(self, project: str) -> dict[str, dict[str, int]]:
        """Counts for metrics: items by status, review tasks by status, labels by source."""
        return {"items": self.items.count_items(project), "tasks": self.reviews.count_tasks(project),
                "labels": self.learning.count_labels(project)}


__all__ = [
    "ClaimedReview",
    "Correction",
    "CorrectionOutcome",
    "FedAnswer",
    "IngestResult",
    "ItemRow",
    "ItemView",
    "LabelRow",
    "RecordResult",
    "ReviewAnswer",
    "ReviewView",
    "SnapshotSummary",
    "SqlStore",
    "StoredSnapshot",
    "SubmitResult",
    "TaskKey",
    "TaskRef",
    "parse_policy_key",
]
