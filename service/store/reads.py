"""Reads for clients and operators: one item with its label and evidence, labels in id order (export and
events), and the project's ground truth in arrival order (for backtests)."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, func, select

from policies import NotFoundError
from service.offline.datasets import LabeledItem
from service.store.base import (
    StoreBase,
    chunks,
    correction_t,
    image_t,
    item_t,
    label_t,
    task_t,
    to_item,
    vote_t,
    with_image,
)
from service.store.corrections import Correction, correction_from_row
from service.store.db import read_tx
from service.store.tables import ItemPublic, LabelPublic, VotePublic

_LABEL_ROW = (label_t.c.id, item_t.c.external_id, label_t.c.label, label_t.c.confidence, label_t.c.source,
              label_t.c.policy_version, label_t.c.threshold, label_t.c.created_at, correction_t.c.replaced_label_id,
              label_t.c.snapshot_id)


def _label_rows() -> Any:
    """Labels with their items' external ids and, for a label a correction wrote, the id of the label it replaced."""
    return (select(*_LABEL_ROW).join(item_t, item_t.c.id == label_t.c.item_id)
            .outerjoin(correction_t, correction_t.c.label_id == label_t.c.id))


# the columns of _label_rows(), in LabelRow's order
_LabelTuple = Row[int, str, str, float | None, str, int, float | None, datetime, int | None, int | None]


@dataclass(slots=True, frozen=True)
class LabelRow:
    """One row of the labels table with its item's external id (labels are exported and streamed in id order)."""

    id: int
    external_id: str
    label: str
    confidence: float | None
    source: str
    policy_version: int
    threshold: float | None
    created_at: datetime
    replaces: int | None = None  # a correction's label: the id of the label it replaced
    snapshot_id: int | None = None  # i14: an agent label's deciding snapshot


@dataclass(slots=True)
class ItemView:
    """An item, its latest label (None while undecided), the votes behind it and its open review's kind."""

    item: ItemPublic
    label: LabelPublic | None
    votes: list[VotePublic]
    policy_version: int | None  # of the label, else of the review task
    review_kind: str | None  # kind of the item's latest review task, if any
    has_image: bool = False
    correction: Correction | None = None  # the correction that wrote the label, if one did


class ReadsMixin(StoreBase):
    def item_view(self, project: str, key: str) -> ItemView:
        with read_tx(self.engine) as conn:
            pid = self._project_id(conn, project)
            row = conn.execute(
                select(item_t).where(item_t.c.project_id == pid, item_t.c.external_id == key)
            ).mappings().first()
            if row is None:
                raise NotFoundError(f"item {key!r} does not exist in project {project!r}")
            item_id = row["id"]
            label = conn.execute(select(label_t).where(label_t.c.item_id == item_id)
                                 .order_by(label_t.c.id.desc()).limit(1)).mappings().first()
            task = conn.execute(select(task_t.c.kind, task_t.c.policy_version).where(task_t.c.item_id == item_id)
                                .order_by(task_t.c.id.desc()).limit(1)).first()
            version = label["policy_version"] if label is not None else (task[1] if task is not None else None)
            votes: list[Any] = []
            if version is not None:
                votes = list(conn.execute(select(vote_t).where(vote_t.c.item_id == item_id,
                                                               vote_t.c.policy_version == version)
                                          .order_by(vote_t.c.id)).mappings())
            has_image = conn.execute(select(image_t.c.item_id).where(image_t.c.item_id == item_id)).first() is not None
            fix = None if label is None else conn.execute(
                select(correction_t).where(correction_t.c.label_id == label["id"])).mappings().first()
        return ItemView(
            item=ItemPublic.model_validate(dict(row)),
            label=None if label is None else LabelPublic.model_validate(dict(label)),
            votes=[VotePublic.model_validate(dict(v)) for v in votes],
            policy_version=version,
            review_kind=None if task is None else task[0],
            has_image=has_image,
            correction=None if fix is None else correction_from_row(key, fix),
        )

    def label_rows(self, project: str, *, after_id: int = 0, limit: int = 1000) -> list[LabelRow]:
        """Labels with ``id > after_id`` in id order (each label exactly once across pages)."""
        with read_tx(self.engine) as conn:
            pid = self._project_id(conn, project)
            rows: Sequence[_LabelTuple] = conn.execute(
                _label_rows().where(label_t.c.project_id == pid, label_t.c.id > after_id)
                .order_by(label_t.c.id).limit(limit)
            ).all()
        return [LabelRow(*r) for r in rows]

    def label_ids_since(self, project: str, *, after_id: int, limit: int) -> list[int]:
        """Ids of the project's labels above ``after_id``, ascending (ids only: cheap to re-read)."""
        with read_tx(self.engine) as conn:
            pid = self._project_id(conn, project)
            return list(conn.execute(select(label_t.c.id).where(label_t.c.project_id == pid, label_t.c.id > after_id)
                                     .order_by(label_t.c.id).limit(limit)).scalars())

    def label_rows_by_id(self, project: str, ids: Sequence[int]) -> list[LabelRow]:
        """The project's labels with these ids, in id order."""
        out: list[LabelRow] = []
        with read_tx(self.engine) as conn:
            pid = self._project_id(conn, project)
            for part in chunks(list(ids)):
                rows: Iterable[_LabelTuple] = conn.execute(
                    _label_rows().where(label_t.c.project_id == pid, label_t.c.id.in_(part)))
                out.extend(LabelRow(*r) for r in rows)
        out.sort(key=lambda r: r.id)
        return out

    def ground_truth_in_order(self, project: str, *, limit: int | None = None) -> list[LabeledItem]:
        """Items with a known label, in arrival order (the most recent ``limit``): the latest human label, else the
        label the client sent with the item."""
        with read_tx(self.engine) as conn:
            pid = self._project_id(conn, project)
            latest = (select(label_t.c.item_id, func.max(label_t.c.id).label("label_id"))
                      .where(label_t.c.project_id == pid, label_t.c.source == "human")
                      .group_by(label_t.c.item_id).subquery())
            human = label_t.alias("human")
            query = (with_image(select(item_t.c.external_id, item_t.c.text, item_t.c.meta, image_t.c.data,
                                       human.c.label, item_t.c.client_label))
                     .outerjoin(latest, latest.c.item_id == item_t.c.id)
                     .outerjoin(human, human.c.id == latest.c.label_id)
                     .where(item_t.c.project_id == pid, (human.c.id.is_not(None)) | item_t.c.client_label.is_not(None))
                     .order_by(item_t.c.seq.desc()))
            if limit is not None:
                query = query.limit(limit)
            rows = conn.execute(query).all()
        return [LabeledItem(to_item(r[0], r[1], r[2], r[3]), r[4] if r[4] is not None else r[5])
                for r in reversed(rows)]
