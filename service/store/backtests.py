"""Stored backtests: each run's request and figures, written with its ``policy.backtested`` audit entry; read back
newest first per policy version, one by id, and the latest one of every version of a project."""

from __future__ import annotations

import math
import numbers
from typing import Any

from sqlalchemy import Table, func, insert, select

from policies import NotFoundError
from service.store.audit import AuditMixin
from service.store.db import read_tx, write_tx
from service.store.ops_models import Backtest, BacktestPublic
from service.store.tables import utcnow

backtest_t: Table = Backtest.__table__  # type: ignore[attr-defined]


def json_safe(value: Any) -> Any:
    """``value`` as plain JSON: numbers as Python ints and floats (numpy scalars included), non-finite floats as None
    (JSON, and so PostgreSQL's JSONB, has no NaN or infinity)."""
    if value is None or isinstance(value, bool | str):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        number = float(value)
        return number if math.isfinite(number) else None
    if isinstance(value, dict):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


class BacktestsMixin(AuditMixin):
    def record_backtest(self, project: str, *, policy_version: int, active_version: int, actor: str, limit: int,
                        batch_size: int, seed: int, ground_truth: int, candidate: dict[str, Any],
                        active: dict[str, Any]) -> BacktestPublic:
        """Store a finished backtest of ``policy_version`` (compared with ``active_version``) and log it."""
        now = utcnow()
        values = {"policy_version": policy_version, "active_version": active_version, "requested_by": actor[:128],
                  "limit": limit, "batch_size": batch_size, "seed": seed, "ground_truth": ground_truth,
                  "candidate": json_safe(candidate), "active": json_safe(active), "created_at": now}
        with write_tx(self.engine) as conn:
            pid = self._project_id(conn, project)
            self._policy(conn, pid, policy_version)  # NotFoundError for an unknown version
            backtest_id: int = conn.execute(insert(backtest_t).values(project_id=pid, **values)
                                       .returning(backtest_t.c.id)).scalar_one()
            self._log(conn, pid, "policy.backtested", actor,
                      {"version": policy_version, "backtest_id": backtest_id, "compared_with": active_version,
                       "ground_truth": ground_truth, "limit": limit, "batch_size": batch_size, "seed": seed}, now)
        return BacktestPublic.model_validate({"id": backtest_id, **values})

    def list_backtests(self, project: str, version: int, *, before_id: int | None = None, limit: int = 20
                       ) -> list[BacktestPublic]:
        """The backtests of a policy version, newest first, with ids below ``before_id`` when given."""
        with read_tx(self.engine) as conn:
            pid = self._project_id(conn, project)
            self._policy(conn, pid, version)  # NotFoundError for an unknown version
            query = select(backtest_t).where(backtest_t.c.project_id == pid, backtest_t.c.policy_version == version)
            if before_id is not None:
                query = query.where(backtest_t.c.id < before_id)
            rows = conn.execute(query.order_by(backtest_t.c.id.desc()).limit(limit)).mappings().all()
        return [BacktestPublic.model_validate(dict(r)) for r in rows]

    def get_backtest(self, project: str, backtest_id: int) -> BacktestPublic:
        """One of the project's backtests; NotFoundError for an unknown id (or one of another project)."""
        with read_tx(self.engine) as conn:
            pid = self._project_id(conn, project)
            row = conn.execute(select(backtest_t).where(backtest_t.c.project_id == pid,
                                                        backtest_t.c.id == backtest_id)).mappings().first()
        if row is None:
            raise NotFoundError(f"backtest {backtest_id} does not exist in project {project!r}")
        return BacktestPublic.model_validate(dict(row))

    def latest_backtests(self, project: str) -> dict[int, BacktestPublic]:
        """The newest backtest of each of the project's policy versions that has one, by version."""
        with read_tx(self.engine) as conn:
            pid = self._project_id(conn, project)
            newest = (select(func.max(backtest_t.c.id)).where(backtest_t.c.project_id == pid)
                      .group_by(backtest_t.c.policy_version))
            rows = conn.execute(select(backtest_t).where(backtest_t.c.project_id == pid,
                                                         backtest_t.c.id.in_(newest))).mappings().all()
        return {r["policy_version"]: BacktestPublic.model_validate(dict(r)) for r in rows}
