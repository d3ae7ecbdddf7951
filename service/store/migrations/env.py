"""Alembic environment: the target is ``SQLModel.metadata`` with every table the store uses.

``service.store.migrate`` passes an open connection in ``config.attributes["connection"]`` (so a PostgreSQL
``search_path`` or SQLite pragmas of the caller's engine apply); the ``alembic`` command line uses
``sqlalchemy.url`` from ``alembic.ini``, else ``LABELAGENT_DATABASE_URL``.
"""

from __future__ import annotations

from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection
from sqlmodel import SQLModel

import service.store  # noqa: F401  (imports every table module, registering the tables on SQLModel.metadata)
from service.settings import get_settings
from service.store.db import make_engine

config = context.config
target_metadata = SQLModel.metadata
if config.config_file_name is not None:  # the alembic command line (service.store.migrate passes no ini file)
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _url() -> str:
    return config.get_main_option("sqlalchemy.url") or get_settings().database_url


def _configure(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, compare_type=True,
                      render_as_batch=connection.dialect.name == "sqlite")


def run_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True,
                      dialect_opts={"paramstyle": "named"})
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    engine = make_engine(_url())
    try:
        with engine.connect() as conn:
            _configure(conn)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
