"""The SQL store: ``SqlStore(engine)`` implements ``agent.ports.AgentStore`` and what workers, reviewers
and the replay need. One transaction per call; hot paths write with SQLAlchemy Core in bulk.

Split by concern: projects and policies (``projects``), ingest and claims (``items``), batch results
(``batches``), the review queue (``reviews``), learner reads and metrics (``learning``); for the HTTP API: changes
with their audit log (``audit``), label corrections (``corrections``), stored backtests (``backtests``), queue
administration such as release and skip (``queue_admin``), item and label reads (``reads``), item listings by
status (``listing``) and metric counts (``metrics``).
"""

from __future__ import annotations

from service.store.audit import AuditMixin
from service.store.backtests import BacktestsMixin
from service.store.base import StoreBase
from service.store.batches import BatchesMixin, LeasedStore, parse_policy_key
from service.store.corrections import Correction, CorrectionOutcome, CorrectionsMixin
from service.store.feed import FedAnswer, FeedMixin
from service.store.items import ItemsMixin
from service.store.keys import KeysMixin
from service.store.learning import LearningMixin
from service.store.listing import ItemRow, ListingMixin
from service.store.metrics import MetricsMixin
from service.store.projects import ProjectsMixin
from service.store.queue_admin import QueueAdminMixin, TaskRef
from service.store.reads import ItemView, LabelRow, ReadsMixin
from service.store.redecide import RedecideMixin
from service.store.reviews import ReviewsMixin
from service.store.types import (
    ClaimedReview,
    IngestResult,
    RecordResult,
    ReviewAnswer,
    ReviewView,
    SubmitResult,
    TaskKey,
)


class SqlStore(CorrectionsMixin, BacktestsMixin, AuditMixin, ProjectsMixin, ItemsMixin, BatchesMixin, QueueAdminMixin,
               ReviewsMixin, LearningMixin, FeedMixin, ReadsMixin, ListingMixin, MetricsMixin, KeysMixin, RedecideMixin,
               StoreBase):
    """Storage over one SQLAlchemy engine (SQLite or PostgreSQL). Thread-safe: no per-call state is kept
    on the instance, only caches of immutable rows (project ids, parsed policy versions)."""

    def stats(self, project: str) -> dict[str, dict[str, int]]:
        """Counts for metrics: items by status, review tasks by status, labels by source."""
        return {"items": self.count_items(project), "tasks": self.count_tasks(project),
                "labels": self.count_labels(project)}


__all__ = [
    "ClaimedReview",
    "Correction",
    "CorrectionOutcome",
    "FedAnswer",
    "IngestResult",
    "ItemRow",
    "ItemView",
    "LabelRow",
    "LeasedStore",
    "RecordResult",
    "ReviewAnswer",
    "ReviewView",
    "SqlStore",
    "SubmitResult",
    "TaskKey",
    "TaskRef",
    "parse_policy_key",
]
