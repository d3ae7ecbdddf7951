"""Certified snapshots (issue 14): persisted before a worker decides with one, read back when a worker starts."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import Table, func, insert, select

from service.store.base import StoreBase, calib_t, task_t
from service.store.db import read_tx, write_tx
from service.store.snapshot_models import AgentSnapshotTable
from service.store.tables import utcnow

snapshot_t: Table = AgentSnapshotTable.__table__  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class SnapshotSummary:
    """For the metrics: the latest persisted snapshot, how many there are, and the audits of would-be auto labels."""

    latest_id: int | None
    threshold: float | None
    snapshots: int
    would_accept_audits: int  # settled audits whose item the deciding snapshot would have auto-labeled ...
    would_accept_correct: int  # ... and of those, the ones whose hidden agent label was right


@dataclass(frozen=True, slots=True)
class StoredSnapshot:
    id: int
    policy_version: int
    learner_version: int
    threshold: float | None
    worker: str
    state: dict[str, Any]


class SnapshotsMixin(StoreBase):
    def save_snapshot(self, project: str, policy_version: int, *, learner_version: int, state: dict[str, Any],
                      worker: str = "") -> int:
        """Persist one snapshot document (``agent.persist.snapshot_state``); returns its id."""
        calib = state.get("calibration") or {}
        with write_tx(self.engine) as conn:
            pid = self._project_id(conn, project)
            self._policy(conn, pid, policy_version)  # a version of this project (NotFoundError otherwise)
            row = conn.execute(insert(snapshot_t).values(
                project_id=pid, policy_version=policy_version, learner_version=learner_version,
                threshold=calib.get("threshold"), n_calibration=int(calib.get("n_calibration", 0)),
                n_above=int(calib.get("n_above", 0)), errors_above=int(calib.get("errors_above", 0)),
                worker=worker[:128], state=state, created_at=utcnow()).returning(snapshot_t.c.id)).one()
        return int(row[0])

    def latest_snapshot(self, project: str, policy_version: int) -> StoredSnapshot | None:
        """The snapshot most recently persisted for this policy version (None: none yet)."""
        with read_tx(self.engine) as conn:
            pid = self._project_id(conn, project)
            row = conn.execute(
                select(snapshot_t.c.id, snapshot_t.c.policy_version, snapshot_t.c.learner_version,
                       snapshot_t.c.threshold, snapshot_t.c.worker, snapshot_t.c.state)
                .where(snapshot_t.c.project_id == pid, snapshot_t.c.policy_version == policy_version)
                .order_by(snapshot_t.c.id.desc()).limit(1)).first()
        if row is None:
            return None
        return StoredSnapshot(int(row[0]), int(row[1]), int(row[2]), row[3], row[4], dict(row[5]))

    def snapshot_summary(self, project: str) -> SnapshotSummary:
        """See :class:`SnapshotSummary`. An audit counts when its task names a snapshot with a threshold and its
        decision-time confidence reached it (a uniform audit of an item below the threshold does not)."""
        with read_tx(self.engine) as conn:
            pid = self._project_id(conn, project)
            latest = conn.execute(select(snapshot_t.c.id, snapshot_t.c.threshold).where(snapshot_t.c.project_id == pid)
                                  .order_by(snapshot_t.c.id.desc()).limit(1)).first()
            count = conn.execute(select(func.count()).select_from(snapshot_t)
                                 .where(snapshot_t.c.project_id == pid)).scalar_one()
            rows = conn.execute(
                select(calib_t.c.predicted == calib_t.c.truth, func.count())
                .select_from(task_t.join(snapshot_t, snapshot_t.c.id == task_t.c.snapshot_id)
                             .join(calib_t, (calib_t.c.item_id == task_t.c.item_id)
                                   & (calib_t.c.policy_version == task_t.c.policy_version)))
                .where(task_t.c.project_id == pid, task_t.c.kind == "audit", calib_t.c.kind == "audit",
                       snapshot_t.c.threshold.is_not(None), task_t.c.confidence >= snapshot_t.c.threshold)
                .group_by(calib_t.c.predicted == calib_t.c.truth)).all()
        audits = sum(int(n) for _, n in rows)
        return SnapshotSummary(None if latest is None else int(latest[0]), None if latest is None else latest[1],
                               int(count), audits, sum(int(n) for ok, n in rows if ok))
