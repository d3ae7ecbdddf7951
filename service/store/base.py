"""Shared plumbing of the store: tables, caches of immutable rows, time and token helpers."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import ARRAY, Column, ColumnElement, Connection, Engine, Table, any_, bindparam, func, select

from policies import NotFoundError, Policy, loads_policy
from service.settings import Settings, get_settings
from service.store.db import is_sqlite
from service.store.labelstudio_models import LabelStudioAnnotation
from service.store.ops_models import AuditEvent, LabelCorrection
from service.store.tables import (
    CalibrationTable,
    ItemImage,
    ItemTable,
    LabelTable,
    ModelVersion,
    PolicyVersion,
    Project,
    Review,
    ReviewTask,
    VoteTable,
    utcnow,
)
from tools.base import Item as ToolItem

T = TypeVar("T")
S = TypeVar("S", bound="StoreBase")

project_t: Table = Project.__table__  # type: ignore[attr-defined]
policy_t: Table = PolicyVersion.__table__  # type: ignore[attr-defined]
item_t: Table = ItemTable.__table__  # type: ignore[attr-defined]
image_t: Table = ItemImage.__table__  # type: ignore[attr-defined]
vote_t: Table = VoteTable.__table__  # type: ignore[attr-defined]
label_t: Table = LabelTable.__table__  # type: ignore[attr-defined]
task_t: Table = ReviewTask.__table__  # type: ignore[attr-defined]
review_t: Table = Review.__table__  # type: ignore[attr-defined]
model_t: Table = ModelVersion.__table__  # type: ignore[attr-defined]
calib_t: Table = CalibrationTable.__table__  # type: ignore[attr-defined]
correction_t: Table = LabelCorrection.__table__  # type: ignore[attr-defined]
ls_annotation_t: Table = LabelStudioAnnotation.__table__  # type: ignore[attr-defined]
audit_t: Table = AuditEvent.__table__  # type: ignore[attr-defined]

CHUNK = 500  # rows or ids per statement: well under SQLite's and PostgreSQL's bound-parameter limits


def one_of(column: Column[Any], name: str, *, sqlite: bool) -> ColumnElement[bool]:
    """``column IN`` the list bound as ``name``. SQLite: the list expanded into one placeholder per value.
    PostgreSQL: one array parameter (``= ANY``), so the statement's text is the same for every list and psycopg parses
    it once; an expanded list was rendered by SQLAlchemy and parsed by psycopg anew at each call (a third of a claim's
    client CPU)."""
    if sqlite:
        return column.in_(bindparam(name, expanding=True))
    return column == any_(bindparam(name, type_=ARRAY(column.type)))


def chunks(seq: Sequence[T], size: int = CHUNK) -> Iterator[Sequence[T]]:
    for start in range(0, len(seq), size):
        yield seq[start:start + size]


def as_utc(now: datetime | None) -> datetime:
    """``now`` as an aware UTC datetime (naive input means UTC); the current time when None."""
    if now is None:
        return utcnow()
    return now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)


def lease_until(now: datetime, seconds: float) -> datetime:
    return now + timedelta(seconds=seconds)


def new_token() -> str:
    return secrets.token_hex(16)


def to_item(key: str, text: str | None, meta: dict[str, Any] | None, image: bytes | None) -> ToolItem:
    return ToolItem(key=key, text=text, metadata=dict(meta or {}), image=image)


# read by every claim: built once
_ACTIVE_VERSION = select(project_t.c.active_version).where(project_t.c.id == bindparam("a_pid"))


def with_image(query: Any) -> Any:
    """``query`` (which reads ``item_t``) joined to the items' images (``image_t.c.data``; NULL when none)."""
    return query.outerjoin(image_t, image_t.c.item_id == item_t.c.id)


class StoreBase:
    """Holds the engine, the settings and caches of rows that never change (project ids, policy versions)."""

    def __init__(self, engine: Engine, settings: Settings | None = None) -> None:
        self.engine = engine
        self.settings = settings or get_settings()
        self.sqlite = is_sqlite(engine)
        self._project_ids: dict[str, int] = {}
        self._policies: dict[tuple[int, int], Policy] = {}
        self._statements: dict[str, Any] = {}

    @classmethod
    def sharing(cls: type[S], core: StoreBase) -> S:
        """A ``cls`` over ``core``'s engine and settings that shares its caches (every repository of one
        :class:`~service.store.SqlStore` reads one project-id, policy and statement cache)."""
        repo = cls.__new__(cls)
        repo.engine, repo.settings, repo.sqlite = core.engine, core.settings, core.sqlite
        repo._project_ids, repo._policies, repo._statements = core._project_ids, core._policies, core._statements
        return repo

    def _statement(self, name: str, build: Callable[[], T]) -> T:
        """The statement ``build()`` makes, built once per store: what varies between calls is a bind parameter.

        SQLAlchemy then reuses the statement's cache key (memoised on the object) and its compiled form instead
        of building a new tree, and hashing it, on every call (~0.3-1 ms a statement on the hot paths).
        """
        stmt = self._statements.get(name)
        if stmt is None:
            stmt = self._statements[name] = build()
        return stmt

    def _replacement_label_ids(self, conn: Connection, n: int) -> list[int] | None:
        """Ids for ``n`` labels that replace deleted ones, taken before the delete; None: let the database pick.

        Export, events and the workers' answer feed walk label ids, so a replacement must get an id above every
        id handed out. PostgreSQL's sequence never goes back; SQLite gives a new row max(rowid) + 1, which is the
        deleted row's own id again when it was the newest label. Writers hold SQLite's write lock (BEGIN
        IMMEDIATE), so the next ids are ours."""
        if not self.sqlite:
            return None
        top = conn.execute(select(func.max(label_t.c.id))).scalar() or 0
        return list(range(top + 1, top + 1 + n))

    # --- caches ----------------------------------------------------------------------------------------

    def _project_id(self, conn: Connection, project: str) -> int:
        pid = self._project_ids.get(project)
        if pid is None:
            pid = conn.execute(select(project_t.c.id).where(project_t.c.name == project)).scalar()
            if pid is None:
                raise NotFoundError(f"project {project!r} does not exist")
            self._project_ids[project] = pid
        return pid

    def _policy(self, conn: Connection, project_id: int, version: int) -> Policy:
        key = (project_id, version)
        policy = self._policies.get(key)
        if policy is None:
            text = conn.execute(
                select(policy_t.c.yaml).where(policy_t.c.project_id == project_id, policy_t.c.version == version)
            ).scalar()
            if text is None:
                raise NotFoundError(f"policy version {version} does not exist in this project")
            policy = loads_policy(text)
            self._policies[key] = policy
        return policy

    def _active_version(self, conn: Connection, project_id: int) -> int:
        version = conn.execute(_ACTIVE_VERSION, {"a_pid": project_id}).scalar()
        if version is None:
            raise NotFoundError("the project has no active policy version")
        return int(version)
