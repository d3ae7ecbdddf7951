"""Counts for the metrics routes: recent activity, queue age, audit outcomes, threshold, reviewer agreement."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, Row, Table, func, select

from service.store.base import StoreBase, calib_t, item_t, label_t, review_t, task_t, vote_t
from service.store.db import read_tx

AGREEMENT_WINDOW = 5000  # most recent multi-reviewer tasks examined for agreement


@dataclass(slots=True, frozen=True)
class Agreement:
    """Among done tasks answered by two reviewers or more: how many were unanimous, and agreeing answer pairs."""

    tasks: int
    unanimous: int
    pairs: int
    agreeing_pairs: int


@dataclass(slots=True, frozen=True)
class ToolUsage:
    tool: str
    votes: int
    abstains: int
    cost: float


class MetricsMixin(StoreBase):
    def labeled_since(self, project: str, since: Sequence[datetime]) -> list[int]:
        """Labels written at or after each time in ``since`` (see :func:`_rows_since`)."""
        with read_tx(self.engine) as conn:
            pid = self._project_id(conn, project)
            return [_rows_since(conn, label_t, pid, t) for t in since]

    def ingested_since(self, project: str, since: Sequence[datetime]) -> list[int]:
        """Items stored at or after each time in ``since`` (see :func:`_rows_since`)."""
        with read_tx(self.engine) as conn:
            pid = self._project_id(conn, project)
            return [_rows_since(conn, item_t, pid, t) for t in since]

    def oldest_open_task(self, project: str) -> datetime | None:
        """Creation time of the oldest task not done yet (open or claimed)."""
        with read_tx(self.engine) as conn:
            pid = self._project_id(conn, project)
            return conn.execute(select(func.min(task_t.c.created_at))
                                .where(task_t.c.project_id == pid, task_t.c.status != "done")).scalar()

    def audit_outcomes(self, project: str) -> tuple[int, int]:
        """(audits settled, audits whose hidden agent label matched the human answer)."""
        with read_tx(self.engine) as conn:
            pid = self._project_id(conn, project)
            rows = conn.execute(select(calib_t.c.predicted == calib_t.c.truth, func.count())
                                .where(calib_t.c.project_id == pid, calib_t.c.kind == "audit")
                                .group_by(calib_t.c.predicted == calib_t.c.truth)).all()
        total = sum(n for _, n in rows)
        return int(total), int(sum(n for ok, n in rows if ok))

    def audit_history(self, project: str) -> list[tuple[datetime, bool]]:
        """Every settled audit, oldest first: (when its record was written, whether the hidden agent label was
        right)."""
        with read_tx(self.engine) as conn:
            pid = self._project_id(conn, project)
            rows: Sequence[Row[datetime, bool]] = conn.execute(
                select(calib_t.c.created_at, calib_t.c.predicted == calib_t.c.truth)
                .where(calib_t.c.project_id == pid, calib_t.c.kind == "audit").order_by(calib_t.c.id)).all()
        return [(at, bool(ok)) for at, ok in rows]

    def tool_usage(self, project: str) -> list[ToolUsage]:
        """Per tool, over every vote recorded in the project: votes, abstentions, summed cost."""
        with read_tx(self.engine) as conn:
            pid = self._project_id(conn, project)
            rows: Sequence[Row[str, int, int, float]] = conn.execute(
                select(vote_t.c.tool, func.count(), func.count(vote_t.c.distribution),
                       func.coalesce(func.sum(vote_t.c.cost), 0.0))
                .where(vote_t.c.project_id == pid).group_by(vote_t.c.tool).order_by(vote_t.c.tool)).all()
        return [ToolUsage(tool, int(n), int(n) - int(cast), float(cost)) for tool, n, cast, cost in rows]

    def latest_threshold(self, project: str) -> float | None:
        """The threshold in force for the most recent agent decision recorded (None: none yet, or none set)."""
        with read_tx(self.engine) as conn:
            pid = self._project_id(conn, project)
            return conn.execute(select(label_t.c.threshold).where(label_t.c.project_id == pid,
                                                                   label_t.c.source == "agent")
                                .order_by(label_t.c.id.desc()).limit(1)).scalar()

    def reviewer_agreement(self, project: str, window: int = AGREEMENT_WINDOW) -> Agreement:
        with read_tx(self.engine) as conn:
            pid = self._project_id(conn, project)
            ids: list[int] = list(conn.execute(select(task_t.c.id).where(
                task_t.c.project_id == pid, task_t.c.status == "done", task_t.c.answers >= 2)
                                    .order_by(task_t.c.id.desc()).limit(window)).scalars())
            answers: dict[int, list[str]] = defaultdict(list)
            if ids:
                low = min(ids)
                rows: Iterable[Row[int, str]] = conn.execute(select(review_t.c.task_id, review_t.c.label).where(
                    review_t.c.project_id == pid, review_t.c.task_id >= low))
                wanted = set(ids)
                for task_id, label in rows:
                    if task_id in wanted:
                        answers[task_id].append(label)
        unanimous = pairs = agreeing = 0
        for labels in answers.values():
            counts = Counter(labels)
            unanimous += len(counts) == 1
            n = len(labels)
            pairs += n * (n - 1) // 2
            agreeing += sum(c * (c - 1) // 2 for c in counts.values())
        return Agreement(len(answers), unanimous, pairs, agreeing)

    def answers_by_reviewer(self, project: str) -> dict[str, int]:
        """How many answers each reviewer name gave in the project."""
        with read_tx(self.engine) as conn:
            pid = self._project_id(conn, project)
            rows: Sequence[Row[str, int]] = conn.execute(
                select(review_t.c.reviewer, func.count()).where(review_t.c.project_id == pid)
                .group_by(review_t.c.reviewer)).all()
        return {reviewer: n for reviewer, n in rows}


def _rows_since(conn: Connection, table: Table, pid: int, since: datetime) -> int:
    """The project's rows of ``table`` created at or after ``since``, counted in proportion to them, not to the
    project: ids grow in insert order, so the window is the id range after the newest row created before it, found
    by walking the primary key backwards (no index on ``created_at``: a count by time scanned every row; measured
    at 200,000 items on PostgreSQL, 75 ms for the item counts of the last minute and hour). A row whose clock ran
    behind a later one's (two API processes) is counted by its id, not its time. The walk reads other projects'
    rows too: an idle project beside a busy one reads the busy one's rows since its own last one (at most the
    table, as the scan by time did)."""
    before = conn.execute(select(table.c.id).where(table.c.project_id == pid, table.c.created_at < since)
                          .order_by(table.c.id.desc()).limit(1)).scalar()
    window = select(func.count()).select_from(table).where(table.c.project_id == pid)
    if before is not None:
        window = window.where(table.c.id > before)
    return int(conn.execute(window).scalar_one())
