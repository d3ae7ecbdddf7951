"""Review queue administration: release or skip a claimed task, look tasks up, list the queue for operators.

A skip releases the claim like a release and also records (task, reviewer, until): claims by that reviewer leave
the task alone until then (the claim's condition is narrowed through ``_claimable_by``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, Table, exists, func, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from policies import ConflictError, NotFoundError
from service.store.base import as_utc, item_t, lease_until, project_t, task_t
from service.store.db import read_tx, write_tx
from service.store.ops_models import ReviewSkip
from service.store.reviews import ReviewsMixin

skip_t: Table = ReviewSkip.__table__  # type: ignore[attr-defined]

_OPEN = {"status": "open", "reviewer": None, "lease_token": None, "lease_expires_at": None}


@dataclass(slots=True, frozen=True)
class TaskRef:
    """Where a review task belongs: its project (name), policy version, item and state."""

    task_id: int
    project: str
    policy_version: int
    external_id: str
    kind: str
    status: str


def stale(task_id: int) -> ConflictError:
    return ConflictError(f"review task {task_id}: the lease token is stale or not yours; claim again")


class QueueAdminMixin(ReviewsMixin):
    def _claimable_by(self, reviewer: Any, now: Any) -> Any:
        skipped = exists().where(skip_t.c.task_id == task_t.c.id, skip_t.c.reviewer == reviewer, skip_t.c.until > now)
        return super()._claimable_by(reviewer, now) & ~skipped

    def task_ref(self, task_id: int) -> TaskRef:
        """The task's project, policy version and item; NotFoundError if there is no such task."""
        with read_tx(self.engine) as conn:
            return self._task_ref(conn, task_id)

    def release_review(self, task_id: int, token: str, *, projects: frozenset[str] | None = None,
                       now: datetime | None = None) -> TaskRef:
        """Give a claimed task back to the queue (the reviewer keeps no claim). ConflictError on a stale token;
        NotFoundError when the task is not in ``projects`` (the caller's scope; None: any)."""
        now = as_utc(now)
        with write_tx(self.engine) as conn:
            ref = in_scope(self._task_ref(conn, task_id), projects)
            self._unclaim(conn, task_id, token, now)
        return ref

    def skip_review(self, task_id: int, token: str, *, seconds: float, projects: frozenset[str] | None = None,
                    now: datetime | None = None) -> tuple[TaskRef, datetime]:
        """Release the task and keep it from its reviewer for ``seconds``. Returns the task and that time.
        NotFoundError when the task is not in ``projects`` (the caller's scope; None: any)."""
        now = as_utc(now)
        until = lease_until(now, seconds)
        with write_tx(self.engine) as conn:
            ref = in_scope(self._task_ref(conn, task_id), projects)
            project_id, reviewer = self._unclaim(conn, task_id, token, now)
            insert_ = (sqlite_insert if self.sqlite else pg_insert)(skip_t)
            conn.execute(insert_.values(project_id=project_id, task_id=task_id, reviewer=reviewer, until=until,
                                        created_at=now)
                         .on_conflict_do_update(index_elements=["task_id", "reviewer"],
                                                set_={"until": until, "created_at": now}))
        return ref, until

    def list_reviews(self, project: str, *, status: str | None = None, kind: str | None = None, offset: int = 0,
                     limit: int = 50) -> tuple[list[dict[str, Any]], int]:
        """Tasks (with their item's external id) by priority then age, and how many match in all."""
        with read_tx(self.engine) as conn:
            pid = self._project_id(conn, project)
            cond = task_t.c.project_id == pid
            if status is not None:
                cond &= task_t.c.status == status
            if kind is not None:
                cond &= task_t.c.kind == kind
            total = conn.execute(select(func.count()).select_from(task_t).where(cond)).scalar_one()
            rows = conn.execute(
                select(task_t, item_t.c.external_id).join(item_t, item_t.c.id == task_t.c.item_id).where(cond)
                .order_by(task_t.c.priority.desc(), task_t.c.id).offset(offset).limit(limit)
            ).mappings().all()
        return [dict(r) for r in rows], int(total)

    # --- helpers -----------------------------------------------------------------------------------------

    def _task_ref(self, conn: Connection, task_id: int) -> TaskRef:
        row: Row[int, str, int, str, str, str] | None = conn.execute(
            select(task_t.c.id, project_t.c.name, task_t.c.policy_version, item_t.c.external_id, task_t.c.kind,
                   task_t.c.status)
            .join(project_t, project_t.c.id == task_t.c.project_id).join(item_t, item_t.c.id == task_t.c.item_id)
            .where(task_t.c.id == task_id)
        ).first()
        if row is None:
            raise NotFoundError(f"review task {task_id} does not exist")
        return TaskRef(*row)

    def _unclaim(self, conn: Connection, task_id: int, token: str, now: datetime) -> tuple[int, str]:
        """Reopen a task claimed under ``token``; returns (project id, the reviewer who held it)."""
        query = select(task_t.c.project_id, task_t.c.reviewer).where(
            task_t.c.id == task_id, task_t.c.status == "claimed", task_t.c.lease_token == token)
        if not self.sqlite:
            query = query.with_for_update()  # SQLite: the write lock is already ours
        row = conn.execute(query).first()
        if row is None:
            raise stale(task_id)
        conn.execute(update(task_t).where(task_t.c.id == task_id).values(updated_at=now, **_OPEN))
        return int(row[0]), str(row[1])


def in_scope(ref: TaskRef, projects: frozenset[str] | None) -> TaskRef:
    """``ref`` when its project is in ``projects`` (None: every project), else NotFoundError (like a missing task)."""
    if projects is not None and ref.project not in projects:
        raise NotFoundError(f"review task {ref.task_id} does not exist")
    return ref
