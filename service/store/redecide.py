"""The review queue's waiting items, decided again by a new certified snapshot (issue 20, ``agent/redecide.py``).

Two calls per re-decision: one read of the waiting tasks with their items, one write transaction that closes the
tasks the snapshot auto-labeled (label, item state, audit log entry) and gives the others fresh priorities. Before
them, once per certificate, the cold-start samples nobody claimed are released into the waiting escalations
(``release_samples``); while no certificate exists and no sample is left unanswered, the oldest waiting items
are promoted to samples (``promote_waiting``). Only tasks still open are touched: a task a reviewer claimed
meanwhile stays with the reviewer (the update's condition, under the row lock PostgreSQL takes, decides; its label
is written only for the tasks that update closed).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, bindparam, exists, func, insert, select, update

from agent.ports import WAITING_REASON
from service.store.audit import audit_t
from service.store.base import StoreBase, as_utc, chunks, image_t, item_t, label_t, task_t, to_item, with_image
from service.store.batches import AGENT_LABEL_COLS
from service.store.bulk import bulk_insert, db_value
from service.store.db import read_tx, write_tx
from tools.base import Item

WAITING_LIMIT = 50_000  # waiting tasks read per re-decision (highest priority first)
REDECIDED_ACTION = "queue.redecided"
RELEASED_ACTION = "queue.samples_released"
PROMOTED_ACTION = "queue.samples_promoted"


@dataclass(frozen=True, slots=True)
class WaitingTask:
    task_id: int
    item: Item
    reason: str  # why it waits: the last decision's reason (a cold-start wait or an escalation)


@dataclass(frozen=True, slots=True)
class AutoLabel:
    """A waiting task the snapshot auto-labels: ``label`` at ``confidence`` (cleared ``threshold``)."""

    task_id: int
    label: str
    confidence: float
    cost: float
    reason: str


@dataclass(frozen=True, slots=True)
class Reorder:
    """A waiting task that stays: the snapshot's suggestion, confidence, queue priority and reason."""

    task_id: int
    priority: float
    suggestion: str | None
    confidence: float
    reason: str


@dataclass(frozen=True, slots=True)
class RedecideOutcome:
    closed: list[int]  # task ids auto-labeled and closed
    skipped: list[int]  # task ids no longer open (claimed or answered meanwhile): left alone
    reordered: int


class RedecideMixin(StoreBase):
    def waiting_tasks(self, project: str, *, policy_version: int, limit: int = WAITING_LIMIT) -> list[WaitingTask]:
        """Open escalations of ``policy_version`` (not audits, not cold-start samples, not claimed) with their
        items, highest priority first."""
        with read_tx(self.engine) as conn:
            pid = self._project_id(conn, project)
            query = (with_image(select(task_t.c.id, item_t.c.external_id, item_t.c.text, item_t.c.meta,
                                       image_t.c.data, task_t.c.reason).join(item_t, item_t.c.id == task_t.c.item_id))
                     .where(task_t.c.project_id == pid, task_t.c.status == "open", task_t.c.kind == "escalation",
                            task_t.c.policy_version == policy_version)
                     .order_by(task_t.c.priority.desc(), task_t.c.id).limit(limit))
            return [WaitingTask(r[0], to_item(r[1], r[2], r[3], r[4]), r[5]) for r in conn.execute(query)]

    def release_samples(self, project: str, *, policy_version: int, reason: str, actor: str,
                        now: datetime | None = None) -> list[str]:
        """Turn the open (unclaimed) cold-start samples of ``policy_version`` into waiting escalations with
        ``reason``, in one transaction with an audit log entry; returns their item keys. A claimed sample stays a
        sample: its reviewer answers it blind."""
        now = as_utc(now)
        with write_tx(self.engine) as conn:
            pid = self._project_id(conn, project)
            release = update(task_t).where(
                task_t.c.project_id == pid, task_t.c.status == "open", task_t.c.kind == "cold_start",
                task_t.c.policy_version == policy_version).values(kind="escalation", reason=reason, updated_at=now)
            return _retyped(conn, release, pid, policy_version, action=RELEASED_ACTION, counted="samples_released",
                            actor=actor, now=now)

    def promote_waiting(self, project: str, *, policy_version: int, limit: int, reason: str, priority: float,
                        actor: str, now: datetime | None = None) -> list[str]:
        """If no cold-start sample of ``policy_version`` is unanswered (open or claimed), turn the ``limit`` oldest
        open escalations waiting with ``WAITING_REASON`` (the ones no claim hands out) into samples (``reason``,
        ``priority``), in one transaction with an audit log entry; returns their item keys (none while a sample is
        unanswered)."""
        now = as_utc(now)
        with read_tx(self.engine) as conn:  # most calls find a sample unanswered: no write transaction for them
            pid = self._project_id(conn, project)
            mine = (task_t.c.project_id == pid) & (task_t.c.policy_version == policy_version)
            unanswered = select(task_t.c.id).where(mine, task_t.c.kind == "cold_start",
                                                   task_t.c.status.in_(("open", "claimed"))).limit(1)
            oldest = (select(task_t.c.id).where(mine, task_t.c.status == "open", task_t.c.kind == "escalation",
                                                task_t.c.reason == WAITING_REASON).order_by(task_t.c.id).limit(limit))
            if conn.execute(unanswered).first() or not conn.execute(oldest.limit(1)).first():
                return []
        with write_tx(self.engine) as conn:
            if conn.execute(unanswered).first():  # checked again under the write lock
                return []
            promote = update(task_t).where(task_t.c.id.in_(oldest), task_t.c.status == "open").values(
                kind="cold_start", reason=reason, priority=priority, updated_at=now)
            return _retyped(conn, promote, pid, policy_version, action=PROMOTED_ACTION, counted="samples_promoted",
                            actor=actor, now=now)

    def settle_redecided(self, project: str, *, policy_version: int, threshold: float, snapshot: int,
                         accepted: Sequence[AutoLabel], reordered: Sequence[Reorder], actor: str,
                         now: datetime | None = None, snapshot_id: int | None = None) -> RedecideOutcome:
        """Close the ``accepted`` tasks that are still open with an agent label under ``threshold`` (the certified
        threshold of snapshot ``snapshot``, persisted as ``snapshot_id``: the labels name it, issue 14), and
        re-prioritize the ``reordered`` ones still open; one transaction, one audit log entry."""
        now = as_utc(now)
        closed: list[int] = []
        with write_tx(self.engine) as conn:
            pid = self._project_id(conn, project)
            by_task = {a.task_id: a for a in accepted}
            labeled = exists().where(label_t.c.item_id == task_t.c.item_id,
                                     label_t.c.policy_version == task_t.c.policy_version)
            items: dict[int, int] = {}
            for part in chunks(list(by_task)):
                rows: Iterable[Row[int, int]] = conn.execute(update(task_t).where(
                    task_t.c.id.in_(part), task_t.c.project_id == pid, task_t.c.status == "open",
                    task_t.c.policy_version == policy_version, ~labeled)
                    .values(status="done", updated_at=now).returning(task_t.c.id, task_t.c.item_id))
                items.update({int(task_id): int(item_id) for task_id, item_id in rows})
            closed = sorted(items)
            ts = db_value(conn, label_t.c.created_at, now)
            bulk_insert(conn, label_t, AGENT_LABEL_COLS, [
                (pid, items[t], policy_version, by_task[t].label, by_task[t].confidence, "agent", threshold,
                 by_task[t].cost, by_task[t].reason, ts, snapshot_id) for t in closed])
            for part in chunks([items[t] for t in closed]):
                conn.execute(update(item_t).where(item_t.c.id.in_(part)).values(status="labeled", updated_at=now))
            if reordered:
                conn.execute(self._reorder_sql(), [
                    {"o_id": r.task_id, "o_priority": r.priority, "o_suggestion": r.suggestion,
                     "o_confidence": r.confidence, "o_reason": r.reason, "o_now": now} for r in reordered])
            conn.execute(insert(audit_t).values(
                project_id=pid, action=REDECIDED_ACTION, actor=actor, created_at=now,
                detail={"snapshot": snapshot, "threshold": threshold, "policy_version": policy_version,
                        "auto_labeled": len(closed), "left_to_reviewers": len(by_task) - len(closed),
                        "reordered": len(reordered)}))
        return RedecideOutcome(closed, sorted(set(by_task) - set(closed)), len(reordered))

    def _reorder_sql(self) -> Any:
        return self._statement("redecide_reorder", lambda: update(task_t).where(
            task_t.c.id == bindparam("o_id"), task_t.c.status == "open").values(
            priority=bindparam("o_priority"), suggestion=bindparam("o_suggestion"),
            confidence=bindparam("o_confidence"), reason=bindparam("o_reason"), updated_at=bindparam("o_now")))

    def redecided_count(self, project: str) -> int:
        """Review tasks the agent took over (closed by a re-decision, with no human answer)."""
        with read_tx(self.engine) as conn:
            pid = self._project_id(conn, project)
            return int(conn.execute(select(func.count()).select_from(task_t).where(
                task_t.c.project_id == pid, task_t.c.status == "done", task_t.c.answers == 0)).scalar_one())


def _retyped(conn: Connection, change: Any, pid: int, policy_version: int, *, action: str, counted: str, actor: str,
             now: datetime) -> list[str]:
    """Run ``change`` (an UPDATE of review tasks' kind), then log ``action`` with how many it changed (as
    ``counted``); returns the changed tasks' item keys."""
    item_ids: list[int] = list(conn.execute(change.returning(task_t.c.item_id)).scalars())
    keys: list[str] = []
    for part in chunks(item_ids):
        keys.extend(conn.execute(select(item_t.c.external_id).where(item_t.c.id.in_(part))).scalars())
    if keys:
        conn.execute(insert(audit_t).values(project_id=pid, action=action, actor=actor, created_at=now,
                                            detail={"policy_version": policy_version, counted: len(keys)}))
    return keys
