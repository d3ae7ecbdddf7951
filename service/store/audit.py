"""Operator changes with their audit log entry in the same transaction: project creation, policy versions,
activation and rollback, re-queued items. ``list_audit`` reads the log back.

Rollback follows the log: every activation pushes a version, every rollback pops one, so rolling back twice goes
two versions back. An activation done without the log (``activate_policy``) counts as one when it is noticed.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, func, select, update
from sqlalchemy.exc import IntegrityError

from policies import ConflictError, InputError, Policy
from service.store.base import as_utc, audit_t, chunks, item_t, project_t
from service.store.db import read_tx, write_tx
from service.store.ops_models import AuditEventPublic
from service.store.projects import ProjectsMixin
from service.store.tables import utcnow


class AuditMixin(ProjectsMixin):
    def list_audit(self, project: str, *, after_id: int = 0, limit: int = 100) -> list[AuditEventPublic]:
        """The project's audit events after ``after_id``, oldest first."""
        with read_tx(self.engine) as conn:
            pid = self._project_id(conn, project)
            rows = conn.execute(select(audit_t).where(audit_t.c.project_id == pid, audit_t.c.id > after_id)
                                .order_by(audit_t.c.id).limit(limit)).mappings().all()
        return [AuditEventPublic.model_validate(dict(r)) for r in rows]

    def count_tool_failures(self, project: str) -> dict[str, int]:
        """Graph runs in which each tool's call failed (``tool.failed`` entries, written with their batch)."""
        tool = audit_t.c.detail["tool"].as_string()
        with read_tx(self.engine) as conn:
            pid = self._project_id(conn, project)
            rows: Sequence[Row[str, int]] = conn.execute(select(tool, func.count()).where(
                audit_t.c.project_id == pid, audit_t.c.action == "tool.failed").group_by(tool)).all()
        return {name: int(n) for name, n in sorted(rows)}

    def create_policy_version(self, project: str, policy: Policy, *, actor: str, requested: int | None = None,
                              activate: bool = False, reason: str = "") -> Policy:
        """Store ``policy`` as the project's next version (its own version number is replaced). ``requested``:
        the version the caller asked for, which must be that next one."""
        if policy.project != project:
            raise InputError(f"policy.project is {policy.project!r} but the project is {project!r}; make them equal")
        now = utcnow()
        try:
            with write_tx(self.engine) as conn:
                pid = self._locked_project(conn, project)
                version = self._next_version(conn, pid)
                if requested is not None and requested != version:
                    raise InputError(f"policy.version: the next version of project {project!r} is {version}; "
                                     f"omit version or send {version}")
                policy = policy.with_version(version)
                self._insert_policy(conn, pid, policy)
                self._log(conn, pid, "policy.created", actor, {"version": version, "reason": reason}, now)
                if activate:
                    self._activate(conn, pid, version, actor, reason, now)
        except IntegrityError:
            raise ConflictError(f"another policy version of project {project!r} was created at the same time; "
                                "send the request again") from None
        self._policies[(pid, version)] = policy
        return policy

    def activate_policy_logged(self, project: str, version: int, *, actor: str, reason: str = ""
                               ) -> tuple[int | None, int]:
        """Make ``version`` active; returns (previously active version, active version). No entry if it already is."""
        now = utcnow()
        with write_tx(self.engine) as conn:
            pid = self._locked_project(conn, project)
            self._policy(conn, pid, version)  # NotFoundError for an unknown version
            return self._activate(conn, pid, version, actor, reason, now)

    def rollback_policy(self, project: str, *, actor: str, reason: str = "") -> tuple[int, int]:
        """Re-activate the version that was active before the current one; returns (from, to)."""
        now = utcnow()
        with write_tx(self.engine) as conn:
            pid = self._locked_project(conn, project)
            history = self._activation_history(conn, pid)
            if len(history) < 2:
                raise ConflictError(f"project {project!r} has no earlier active policy version to roll back to")
            current, target = history[-1], history[-2]
            conn.execute(update(project_t).where(project_t.c.id == pid).values(active_version=target))
            self._log(conn, pid, "policy.rolled_back", actor, {"from": current, "to": target, "reason": reason}, now)
        return current, target

    def requeue_failed(self, project: str, *, keys: Sequence[str] | None, actor: str, now: datetime | None = None
                       ) -> list[str]:
        """Failed items (all, or those of ``keys``) become pending again with their attempts and error reset."""
        now = as_utc(now)
        values = {"status": "pending", "attempts": 0, "error": None, "lease_owner": None, "lease_token": None,
                  "lease_expires_at": None, "updated_at": now}
        done: list[str] = []
        with write_tx(self.engine) as conn:
            pid = self._project_id(conn, project)
            cond = (item_t.c.project_id == pid) & (item_t.c.status == "failed")
            parts: list[Any] = [None] if keys is None else list(chunks(list(keys)))
            for part in parts:
                where = cond if part is None else cond & item_t.c.external_id.in_(part)
                done.extend(conn.execute(update(item_t).where(where).values(**values)
                                         .returning(item_t.c.external_id)).scalars())
            if done:
                self._log(conn, pid, "items.requeued", actor, {"count": len(done), "external_ids": done[:100]}, now)
        return done

    def log_event(self, project: str, action: str, *, actor: str, detail: dict[str, Any]) -> None:
        """An audit entry that goes with no change here (the demo's simulation starting, pausing, stopping)."""
        with write_tx(self.engine) as conn:
            self._log(conn, self._project_id(conn, project), action, actor, detail, utcnow())

    # --- helpers -----------------------------------------------------------------------------------------

    def _locked_project(self, conn: Connection, project: str) -> int:
        """The project's id, with its row locked on PostgreSQL (policy changes of a project take turns)."""
        pid = self._project_id(conn, project)
        if not self.sqlite:
            conn.execute(select(project_t.c.id).where(project_t.c.id == pid).with_for_update())
        return pid

    def _activate(self, conn: Connection, pid: int, version: int, actor: str, reason: str, now: datetime
                  ) -> tuple[int | None, int]:
        current = conn.execute(select(project_t.c.active_version).where(project_t.c.id == pid)).scalar()
        if current == version:
            return current, version
        conn.execute(update(project_t).where(project_t.c.id == pid).values(active_version=version))
        self._log(conn, pid, "policy.activated", actor, {"from": current, "to": version, "reason": reason}, now)
        return current, version

    def _activation_history(self, conn: Connection, pid: int) -> list[int]:
        """Versions made active, oldest first, with rolled-back ones removed; ends with the active version."""
        stack: list[int] = []
        rows: Iterable[Row[str, dict[str, Any]]] = conn.execute(select(audit_t.c.action, audit_t.c.detail).where(
            audit_t.c.project_id == pid,
            audit_t.c.action.in_(("project.created", "policy.activated", "policy.rolled_back"))).order_by(audit_t.c.id))
        for action, detail in rows:
            if action == "project.created":
                stack = [int(detail["policy_version"])]
            elif action == "policy.activated":
                if not stack and detail.get("from") is not None:  # the project was created without the log
                    stack.append(int(detail["from"]))
                stack.append(int(detail["to"]))
            elif stack:
                stack.pop()
        active = conn.execute(select(project_t.c.active_version).where(project_t.c.id == pid)).scalar()
        if active is not None and (not stack or stack[-1] != active):
            stack.append(int(active))  # activated without the log
        return stack
