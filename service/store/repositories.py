"""The store's repositories, one per aggregate. Each is composed of the concern modules beside it (their method
bodies are unchanged) and shares one engine and one set of caches with the others (:meth:`StoreBase.sharing`).

- :class:`ItemsRepository`: ingest, claims and leases, failures and images (``items``), batch results
  (``batches``), item and label reads (``reads``), listings by status (``listing``).
- :class:`ReviewsRepository`: the review queue (``reviews``) and its administration: release, skip, listing
  (``queue_admin``), the waiting tasks a new certified snapshot re-decides (``redecide``).
- :class:`LearningRepository`: labels and what the learner and the metrics read: ground truth, calibration,
  model versions, votes (``learning``), certified snapshots (``snapshots``), the workers' answer feed
  (``feed``), metric counts (``metrics``).
- :class:`ProjectsRepository`: projects and their policy versions (``projects``), API keys and idempotency
  records (``keys``).
- :class:`AuditRepository`: operator changes logged in the same transaction (``audit``): policy versions,
  activation and rollback, re-queues, label corrections (``corrections``) and stored backtests (``backtests``).
"""

from __future__ import annotations

from service.store.backtests import BacktestsMixin
from service.store.batches import BatchesMixin
from service.store.corrections import CorrectionsMixin
from service.store.feed import FeedMixin
from service.store.items import ItemsMixin
from service.store.keys import KeysMixin
from service.store.learning import LearningMixin
from service.store.listing import ListingMixin
from service.store.metrics import MetricsMixin
from service.store.projects import ProjectsMixin
from service.store.queue_admin import QueueAdminMixin
from service.store.reads import ReadsMixin
from service.store.redecide import RedecideMixin
from service.store.snapshots import SnapshotsMixin


class ItemsRepository(ItemsMixin, BatchesMixin, ReadsMixin, ListingMixin):
    """Items from ingest to their label: claims, leases, batch results, reads and listings."""


class ReviewsRepository(QueueAdminMixin, RedecideMixin):
    """The human review queue: claims, answers, release and skip, listings and counts."""


class LearningRepository(LearningMixin, FeedMixin, MetricsMixin, SnapshotsMixin):
    """Labels as the learner and the metrics read them: ground truth, calibration, model versions, the feed."""


class ProjectsRepository(ProjectsMixin, KeysMixin):
    """Projects, their policy versions, and API keys with idempotency records."""


class AuditRepository(CorrectionsMixin, BacktestsMixin):
    """Operator changes with their audit log entry: policy versions, activation, rollback, re-queues,
    label corrections and stored backtests; ``list_audit`` reads the log back."""
