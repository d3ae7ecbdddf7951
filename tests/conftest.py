"""Shared fixtures: every test gets its own database.

``engine`` is parametrised over ``sqlite`` (a file in ``tmp_path``) and ``postgres`` (a fresh schema in the
database at ``LABELAGENT_TEST_POSTGRES_URL``, dropped afterwards). When PostgreSQL is unreachable the
postgres variants skip, or FAIL when the ``CI`` environment variable is set.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from functools import cache
from typing import NoReturn

import pytest
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.engine import make_url

from policies import Policy
from service.settings import Settings, get_settings
from service.store import SqlStore
from service.store.db import create_all, make_engine
from tests.factories import make_policy

DEFAULT_PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def postgres_url() -> str:
    return os.environ.get("LABELAGENT_TEST_POSTGRES_URL", DEFAULT_PG_URL)


@cache
def _postgres_problem() -> str | None:
    """None if PostgreSQL answers, else why not (checked once per session)."""
    url = postgres_url()
    try:
        probe = create_engine(url, connect_args={"connect_timeout": 3})
        with probe.connect() as conn:
            conn.execute(text("SELECT 1"))
        probe.dispose()
    except Exception as exc:  # any failure to connect means "unreachable" here
        return f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
    return None


def unreachable(what: str, problem: object, tests: str) -> NoReturn:
    """A service the tests need does not answer: skip them, or fail them when ``CI`` is set (CI must run them)."""
    msg = f"{what} is unreachable: {problem}"
    if os.environ.get("CI"):
        pytest.fail(f"{msg} -- CI is set, so the {tests} tests must run", pytrace=False)
    pytest.skip(msg)


def require_postgres() -> str:
    problem = _postgres_problem()
    if problem is not None:
        url = make_url(postgres_url()).render_as_string(hide_password=True)
        unreachable(f"PostgreSQL at {url} (LABELAGENT_TEST_POSTGRES_URL)", problem, "postgres")
    return postgres_url()


@pytest.fixture
def settings(monkeypatch: pytest.MonkeyPatch) -> Iterator[Settings]:
    """Settings read from a clean environment (tests may ``monkeypatch.setenv`` before asking for this)."""
    get_settings.cache_clear()
    yield get_settings()
    get_settings.cache_clear()


@pytest.fixture
def sqlite_engine(tmp_path) -> Iterator[Engine]:
    engine = make_engine(f"sqlite:///{tmp_path / 'test.db'}")
    create_all(engine)
    yield engine
    engine.dispose()


@pytest.fixture
def postgres_engine() -> Iterator[Engine]:
    url = require_postgres()
    schema = f"t_{uuid.uuid4().hex[:16]}"
    admin = create_engine(url, isolation_level="AUTOCOMMIT", pool_pre_ping=True)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
    scoped = make_url(url).update_query_dict({"options": f"-csearch_path={schema}"})
    engine = make_engine(scoped.render_as_string(hide_password=False))
    try:
        create_all(engine)
        yield engine
    finally:
        engine.dispose()
        with admin.connect() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest) -> Engine:
    """A fresh, empty database with the schema, on each backend."""
    return request.getfixturevalue(f"{request.param}_engine")


@pytest.fixture
def store(engine: Engine) -> SqlStore:
    return SqlStore(engine, Settings())


@pytest.fixture
def policy() -> Policy:
    return make_policy()


@pytest.fixture
def project(store: SqlStore, policy: Policy) -> str:
    """A project named after the policy, with the policy active."""
    store.projects.create_project(policy.project, policy)
    return policy.project

