"""Reading new human answers incrementally, for learners in other processes than the API that stored them.

Human labels get ids from one sequence, but on PostgreSQL ids are not committed in id order: a submit that
took its ids first may commit after one that took later ids. A reader that only remembers the largest id it
saw would skip the late one forever. :class:`service.runtime.feedback.AnswerFeed` therefore re-reads a trailing
window of ids (cheap: ids only, from the ``(project_id, source, id)`` index) and fetches the rows it has not
seen; the queries it needs are here. A label written by a correction (``label_correction``) is delivered like any
human label, marked ``correction`` so that the learner trains on it without adding it to the calibration set.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, select

from agent.ports import GroundTruth
from service.store.base import (
    StoreBase,
    as_utc,
    chunks,
    correction_t,
    image_t,
    item_t,
    label_t,
    one_of,
    to_item,
    with_image,
)
from service.store.db import read_tx


@dataclass(slots=True, frozen=True)
class FedAnswer:
    """A settled human label with its row id (the feed's cursor) and the policy version it was given under."""

    id: int
    policy_version: int
    answer: GroundTruth


_ANSWER_COLS = (label_t.c.id, label_t.c.policy_version, label_t.c.label, item_t.c.external_id, item_t.c.text,
                item_t.c.meta, image_t.c.data, correction_t.c.id)


def _answers() -> Any:
    """The answer columns over labels with their items, images and the correction that wrote them (if any)."""
    return with_image(select(*_ANSWER_COLS).join(item_t, item_t.c.id == label_t.c.item_id)).outerjoin(
        correction_t, correction_t.c.label_id == label_t.c.id)


def _fed(r: Any) -> FedAnswer:
    item = to_item(r[3], r[4], r[5], r[6])
    return FedAnswer(r[0], r[1], GroundTruth(item=item, label=r[2], correction=r[7] is not None))


class FeedMixin(StoreBase):
    def human_label_ids_since(self, project: str, after_id: int = 0) -> list[int]:
        """Ids of the project's human labels with ``id > after_id``, ascending."""
        with read_tx(self.engine) as conn:
            pid = self._project_id(conn, project)
            query = (select(label_t.c.id)
                     .where(label_t.c.project_id == pid, label_t.c.source == "human", label_t.c.id > after_id)
                     .order_by(label_t.c.id))
            return list(conn.execute(query).scalars())

    def load_human_labels(self, project: str, ids: Sequence[int]) -> list[FedAnswer]:
        """The human labels with these ids (with their items), in id order."""
        out: list[FedAnswer] = []
        query = self._statement("feed_by_ids", lambda: _answers().where(
            label_t.c.project_id == bindparam("pid"), label_t.c.source == "human",
            one_of(label_t.c.id, "ids", sqlite=self.sqlite)))
        with read_tx(self.engine) as conn:
            pid = self._project_id(conn, project)
            for part in chunks(list(ids)):
                out.extend(_fed(r) for r in conn.execute(query, {"pid": pid, "ids": list(part)}))
        out.sort(key=lambda a: a.id)
        return out

    def load_ground_truth_since(self, project: str, after_id: int = 0) -> tuple[list[FedAnswer], int]:
        """Human labels with ``id > after_id`` in id order, and the new cursor (the largest id, else ``after_id``).

        One statement, so on PostgreSQL it reads one snapshot. Use :class:`service.runtime.feedback.AnswerFeed` for a
        cursor that does not skip answers committed out of id order."""
        with read_tx(self.engine) as conn:
            pid = self._project_id(conn, project)
            query = (_answers()
                     .where(label_t.c.project_id == pid, label_t.c.source == "human", label_t.c.id > after_id)
                     .order_by(label_t.c.id))
            rows = conn.execute(query).all()
        answers = [_fed(r) for r in rows]
        return answers, (answers[-1].id if answers else after_id)

    def human_label_floor(self, project: str, before: datetime) -> int:
        """The largest id among the project's human labels created before ``before`` (0 when none)."""
        with read_tx(self.engine) as conn:
            pid = self._project_id(conn, project)
            top = conn.execute(select(func.max(label_t.c.id)).where(
                label_t.c.project_id == pid, label_t.c.source == "human", label_t.c.created_at < as_utc(before),
            )).scalar()
        return int(top or 0)
