"""Projects and their immutable policy versions."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import Connection, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from policies import ConflictError, InputError, NotFoundError, Policy, dumps_policy
from service.store.base import StoreBase, audit_t, policy_t, project_t
from service.store.db import read_tx, write_tx
from service.store.tables import PolicyVersionPublic, ProjectPublic, utcnow


class ProjectsMixin(StoreBase):
    def create_project(self, name: str, policy: Policy, *, actor: str | None = None) -> ProjectPublic:
        """Create ``name`` with ``policy`` as its first, active version. ConflictError if it exists. With an
        ``actor``, a ``project.created`` entry goes to the audit log in the same transaction."""
        if policy.project != name:
            raise InputError(f"policy.project is {policy.project!r} but the project is {name!r}; make them equal")
        now = utcnow()
        try:
            with write_tx(self.engine) as conn:
                pid: int = conn.execute(
                    insert(project_t).values(name=name, data_kind=policy.data_kind, active_version=None,
                                             item_seq=0, created_at=now).returning(project_t.c.id)
                ).scalar_one()
                self._insert_policy(conn, pid, policy)
                conn.execute(update(project_t).where(project_t.c.id == pid).values(active_version=policy.version))
                if actor is not None:
                    self._log(conn, pid, "project.created", actor, {"policy_version": policy.version}, now)
        except IntegrityError:
            raise ConflictError(f"project {name!r} already exists") from None
        self._project_ids[name] = pid
        self._policies[(pid, policy.version)] = policy
        return self.get_project(name)

    def get_project(self, name: str) -> ProjectPublic:
        with read_tx(self.engine) as conn:
            row = conn.execute(select(project_t).where(project_t.c.name == name)).mappings().first()
        if row is None:
            raise NotFoundError(f"project {name!r} does not exist")
        return ProjectPublic.model_validate(dict(row))

    def list_projects(self) -> list[ProjectPublic]:
        with read_tx(self.engine) as conn:
            rows = conn.execute(select(project_t).order_by(project_t.c.name)).mappings().all()
        return [ProjectPublic.model_validate(dict(r)) for r in rows]

    def add_policy_version(self, project: str, policy: Policy, *, activate: bool = False) -> Policy:
        """Store ``policy`` under its own version number. Re-adding identical content is a no-op; a different
        policy under a taken version is a ConflictError (versions are immutable: use ``next_policy_version``)."""
        if policy.project != project:
            raise InputError(f"policy.project is {policy.project!r} but the project is {project!r}")
        with write_tx(self.engine) as conn:
            pid = self._project_id(conn, project)
            existing = conn.execute(
                select(policy_t.c.yaml).where(policy_t.c.project_id == pid, policy_t.c.version == policy.version)
            ).scalar()
            if existing is None:
                self._insert_policy(conn, pid, policy)
            elif existing != dumps_policy(policy):
                raise ConflictError(
                    f"policy {policy.key} already exists with different content; policies are immutable, "
                    f"store it as version {self._next_version(conn, pid)}"
                )
            if activate:
                conn.execute(update(project_t).where(project_t.c.id == pid).values(active_version=policy.version))
        self._policies[(pid, policy.version)] = policy
        return policy

    def next_policy_version(self, project: str) -> int:
        with read_tx(self.engine) as conn:
            return self._next_version(conn, self._project_id(conn, project))

    def activate_policy(self, project: str, version: int) -> Policy:
        """Make ``version`` the one the next batch uses (also how to roll back)."""
        with write_tx(self.engine) as conn:
            pid = self._project_id(conn, project)
            policy = self._policy(conn, pid, version)
            conn.execute(update(project_t).where(project_t.c.id == pid).values(active_version=version))
        return policy

    def active_policy(self, project: str) -> Policy:
        with read_tx(self.engine) as conn:
            pid = self._project_id(conn, project)
            return self._policy(conn, pid, self._active_version(conn, pid))

    def get_policy(self, project: str, version: int) -> Policy:
        with read_tx(self.engine) as conn:
            return self._policy(conn, self._project_id(conn, project), version)

    def list_policy_versions(self, project: str) -> list[PolicyVersionPublic]:
        with read_tx(self.engine) as conn:
            pid = self._project_id(conn, project)
            rows = conn.execute(
                select(policy_t).where(policy_t.c.project_id == pid).order_by(policy_t.c.version)
            ).mappings().all()
        return [PolicyVersionPublic.model_validate(dict(r)) for r in rows]

    # --- helpers -----------------------------------------------------------------------------------------

    def _insert_policy(self, conn: Connection, project_id: int, policy: Policy) -> None:
        conn.execute(insert(policy_t).values(project_id=project_id, version=policy.version,
                                             yaml=dumps_policy(policy), created_at=utcnow()))

    @staticmethod
    def _next_version(conn: Connection, project_id: int) -> int:
        top = conn.execute(select(func.max(policy_t.c.version)).where(policy_t.c.project_id == project_id)).scalar()
        return int(top or 0) + 1

    def _log(self, conn: Connection, project_id: int, action: str, actor: str, detail: dict[str, Any],
             now: datetime) -> None:
        conn.execute(insert(audit_t).values(project_id=project_id, action=action, actor=actor, detail=detail,
                                            created_at=now))
