"""Schema migrations with Alembic: ``labelagent db upgrade`` and the checks ``serve`` and ``worker`` make.

The scripts live in ``service/store/migrations`` (a package, so they ship with the wheel); no ``alembic.ini`` is
needed. ``service.store.db.create_all`` stays for tests and throwaway databases; a database created that way can be
adopted with :func:`ensure_schema` (it is stamped at the head revision when it already has every table).
"""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Engine, inspect
from sqlmodel import SQLModel

from policies import ConflictError
from service.store.db import is_sqlite

log = logging.getLogger("labelagent.migrate")

MIGRATIONS = Path(__file__).resolve().parent / "migrations"
VERSION_TABLE = "alembic_version"


def alembic_config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, revision: str = "head") -> str | None:
    """Migrate the database behind ``engine`` to ``revision``; returns the revision it is at afterwards."""
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, revision)
    return current_revision(engine)


def stamp(engine: Engine, revision: str = "head") -> None:
    cfg = alembic_config()
    with engine.begin() as conn:
        cfg.attributes["connection"] = conn
        command.stamp(cfg, revision)


def model_tables() -> set[str]:
    import service.store  # noqa: F401  (registers every table)

    return set(SQLModel.metadata.tables)


def ensure_schema(engine: Engine, *, migrate: bool | None = None) -> str:
    """Make sure the schema is current; returns what was done (``"created"``, ``"upgraded"``, ``"adopted"``,
    ``"current"``).

    An empty database is created by migrating to head; a database made by ``create_all`` (every table, no
    version) is stamped at head. A database behind head is upgraded when ``migrate`` is true (default: on
    SQLite only, a file owned by this process); otherwise ConflictError asks for ``labelagent db upgrade``."""
    tables = set(inspect(engine).get_table_names())
    wanted = model_tables()
    if VERSION_TABLE not in tables:
        if not tables & wanted:
            upgrade(engine)
            return "created"
        missing = sorted(wanted - tables)
        if missing:
            raise ConflictError(f"the database has some labelagent tables but not {missing[0]!r} and no migration "
                                "version; it was not made by labelagent db upgrade: migrate it by hand")
        stamp(engine)
        return "adopted"
    current, head = current_revision(engine), head_revision()
    if current == head:
        return "current"
    if migrate if migrate is not None else is_sqlite(engine):
        upgrade(engine)
        return "upgraded"
    raise ConflictError(f"the database schema is at revision {current}, the code needs {head}: "
                        "run `labelagent db upgrade`")


def require_schema(engine: Engine) -> None:
    """For workers: the schema must exist (they never create or migrate it)."""
    tables = set(inspect(engine).get_table_names())
    missing = sorted(model_tables() - tables)
    if missing:
        raise ConflictError(f"the database has no table {missing[0]!r}: run `labelagent db upgrade` first")
