"""Listing a project's items by status, a page at a time (operators: what is failed, waiting, in review)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Row, select

from service.store.base import StoreBase, item_t, label_t
from service.store.db import read_tx


@dataclass(slots=True, frozen=True)
class ItemRow:
    """One item of a listing with its latest label (None while undecided)."""

    id: int
    external_id: str
    status: str  # the stored status (pending, leased, labeled, in_review, failed)
    label: str | None
    source: str | None
    confidence: float | None
    policy_version: int | None
    client_label: str | None
    error: str | None
    created_at: datetime
    updated_at: datetime


class ListingMixin(StoreBase):
    def list_items(self, project: str, *, statuses: Sequence[str] | None = None, after_id: int = 0,
                   limit: int = 100) -> list[ItemRow]:
        """The project's items with ``id > after_id`` in id (arrival) order, those with a stored status in
        ``statuses`` when given, each with its latest label."""
        with read_tx(self.engine) as conn:
            pid = self._project_id(conn, project)
            query = (select(item_t.c.id, item_t.c.external_id, item_t.c.status, item_t.c.client_label, item_t.c.error,
                            item_t.c.created_at, item_t.c.updated_at)
                     .where(item_t.c.project_id == pid, item_t.c.id > after_id).order_by(item_t.c.id).limit(limit))
            if statuses is not None:
                query = query.where(item_t.c.status.in_(list(statuses)))
            items = conn.execute(query).all()
            latest: dict[int, tuple[str, str, float | None, int]] = {}
            if items:
                rows: Iterable[Row[int, str, str, float | None, int]] = conn.execute(
                    select(label_t.c.item_id, label_t.c.label, label_t.c.source, label_t.c.confidence,
                           label_t.c.policy_version)
                    .where(label_t.c.item_id.in_([r.id for r in items])).order_by(label_t.c.id))
                for item_id, lab, src, conf, ver in rows:
                    latest[item_id] = (lab, src, conf, ver)  # ascending ids: the last one wins
        out = []
        for r in items:
            label, source, confidence, version = latest.get(r.id, (None, None, None, None))
            out.append(ItemRow(r.id, r.external_id, r.status, label, source, confidence, version, r.client_label,
                               r.error, r.created_at, r.updated_at))
        return out
