"""Settings from the environment; engine setup for SQLite and PostgreSQL."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from sqlalchemy import inspect, text
from sqlmodel import select

from service.settings import Settings, get_settings
from service.store.db import (
    _WRITE_LOCKS,
    create_all,
    database_advice,
    engine_from_settings,
    make_engine,
    read_tx,
    session_scope,
    write_tx,
)
from service.store.tables import Project


def test_settings_defaults_and_env_override(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("LABELAGENT_DATABASE_URL", "LABELAGENT_BATCH_SIZE", "LABELAGENT_LEASE_SECONDS"):
        monkeypatch.delenv(name, raising=False)
    get_settings.cache_clear()
    try:
        defaults = get_settings()
        assert defaults.database_url == "sqlite:///./labelagent.db"
        assert (defaults.batch_size, defaults.lease_seconds, defaults.max_batch_items) == (256, 60, 1000)
        assert get_settings() is defaults  # cached

        monkeypatch.setenv("LABELAGENT_DATABASE_URL", "sqlite:////tmp/elsewhere.db")
        monkeypatch.setenv("LABELAGENT_BATCH_SIZE", "32")
        assert get_settings().batch_size == 256  # still the cached object until the cache is cleared
        get_settings.cache_clear()
        fresh = get_settings()
        assert fresh.database_url == "sqlite:////tmp/elsewhere.db"
        assert fresh.batch_size == 32
    finally:
        get_settings.cache_clear()


def test_settings_reject_invalid_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LABELAGENT_BATCH_SIZE", "0")
    with pytest.raises(ValueError, match="batch_size"):
        Settings()


def test_engine_from_settings(tmp_path) -> None:
    engine = engine_from_settings(Settings(database_url=f"sqlite:///{tmp_path / 's.db'}", sqlite_busy_timeout_ms=777))
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 777
        assert engine.url.database == str(tmp_path / "s.db")
    finally:
        engine.dispose()


def test_sqlite_engine_pragmas(tmp_path) -> None:
    engine = make_engine(f"sqlite:///{tmp_path / 'p.db'}", busy_timeout_ms=1234)
    try:
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"
            assert conn.exec_driver_sql("PRAGMA synchronous").scalar() == 1  # NORMAL
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
            assert conn.exec_driver_sql("PRAGMA busy_timeout").scalar() == 1234
    finally:
        engine.dispose()


def test_write_tx_holds_the_sqlite_write_lock(tmp_path) -> None:
    """BEGIN IMMEDIATE: a second writer cannot start while the first is open (no SQLITE_BUSY later)."""
    engine = make_engine(f"sqlite:///{tmp_path / 'w.db'}", busy_timeout_ms=0)
    other = make_engine(f"sqlite:///{tmp_path / 'w.db'}", busy_timeout_ms=0)
    try:
        create_all(engine)
        with write_tx(engine) as conn:
            conn.execute(text("INSERT INTO project (name, data_kind, item_seq, created_at) "
                              "VALUES ('a', 'text', 0, '')"))
            with pytest.raises(Exception, match="locked"), write_tx(other):
                pass
            with read_tx(other) as reader:  # readers are never blocked by the writer (WAL)
                assert reader.execute(text("SELECT count(*) FROM project")).scalar() == 0
        with read_tx(other) as reader:
            assert reader.execute(text("SELECT count(*) FROM project")).scalar() == 1
    finally:
        engine.dispose()
        other.dispose()


INSERT_PROJECT = "INSERT INTO project (name, data_kind, item_seq, created_at) VALUES ('{}', 'text', 0, '')"


def test_sqlite_writers_of_one_process_take_turns_on_a_lock(tmp_path) -> None:
    """Threads of one process wait for the writer before them on the engine's lock (woken at its commit, rather
    than in SQLite's sleeping busy handler; the wake-up time is the benchmark's business): all their writes land."""
    engine = make_engine(f"sqlite:///{tmp_path / 'w.db'}")
    assert engine in _WRITE_LOCKS
    create_all(engine)
    first_in, go_on = threading.Event(), threading.Event()

    def first() -> None:
        with write_tx(engine) as conn:
            conn.execute(text(INSERT_PROJECT.format("a")))
            first_in.set()
            assert go_on.wait(30)

    def second() -> None:
        with write_tx(engine) as conn:
            conn.execute(text(INSERT_PROJECT.format("b")))

    try:
        with ThreadPoolExecutor(2) as pool:
            a = pool.submit(first)
            assert first_in.wait(30)
            b = pool.submit(second)
            assert not b.done()  # it cannot write while the first transaction is open
            go_on.set()
            a.result(30)
            b.result(30)
        with read_tx(engine) as conn:
            assert conn.execute(text("SELECT count(*) FROM project")).scalar() == 2
    finally:
        engine.dispose()


def test_a_sqlite_writer_stuck_in_its_transaction_fails_its_peers_after_the_busy_timeout(tmp_path) -> None:
    """The lock waits no longer than the busy timeout; then SQLite decides ("database is locked"), as it would
    without the lock: no peer hangs behind a stuck writer."""
    engine = make_engine(f"sqlite:///{tmp_path / 'w.db'}", busy_timeout_ms=100)
    create_all(engine)
    stuck, done = threading.Event(), threading.Event()

    def holder() -> None:
        with write_tx(engine):
            stuck.set()
            assert done.wait(30)

    try:
        with ThreadPoolExecutor(1) as pool:
            held = pool.submit(holder)
            assert stuck.wait(30)
            with pytest.raises(Exception, match="locked"), write_tx(engine):
                pass
            done.set()
            held.result(30)
    finally:
        engine.dispose()


def test_postgres_engines_have_no_process_write_lock(postgres_engine) -> None:
    assert postgres_engine not in _WRITE_LOCKS


def test_create_all_is_idempotent_and_has_the_hot_indexes(engine) -> None:
    create_all(engine)  # second time: no error
    insp = inspect(engine)
    tables = set(insp.get_table_names())
    assert {"project", "policy_version", "item", "vote", "label", "review_task", "review", "model_version",
            "calibration_record"} <= tables
    item_indexes = {ix["name"]: ix["column_names"] for ix in insp.get_indexes("item")}
    assert item_indexes["ix_item_claim"] == ["project_id", "status", "seq"]
    task_indexes = {ix["name"] for ix in insp.get_indexes("review_task")}
    assert "ix_review_task_claim" in task_indexes
    label_uniques = {u["name"]: u["column_names"] for u in insp.get_unique_constraints("label")}
    assert label_uniques["uq_label_item_version"] == ["item_id", "policy_version"]


@pytest.mark.postgres
def test_postgres_engine_uses_psycopg_with_pre_ping(postgres_engine) -> None:
    assert postgres_engine.dialect.driver == "psycopg"
    assert postgres_engine.pool._pre_ping is True
    with postgres_engine.connect() as conn:
        assert conn.exec_driver_sql("SHOW plan_cache_mode").scalar() == "force_custom_plan"


def test_make_engine_rejects_other_databases() -> None:
    with pytest.raises(ValueError, match="unsupported database URL"):
        make_engine("mysql://user@localhost/db")


def test_session_scope_commits_and_rolls_back(engine) -> None:
    with session_scope(engine) as session:
        session.add(Project(name="kept", data_kind="text"))
    with pytest.raises(RuntimeError), session_scope(engine) as session:
        session.add(Project(name="dropped", data_kind="text"))
        session.flush()
        raise RuntimeError("boom")
    with session_scope(engine, write=False) as session:
        names = sorted(p.name for p in session.exec(select(Project)).all())
    assert names == ["kept"]


def test_sqlite_needs_no_database_advice(tmp_path) -> None:
    assert database_advice(make_engine(f"sqlite:///{tmp_path / 'a.db'}")) == []


def test_postgres_without_autovacuum_is_named_at_start(postgres_engine, caplog: pytest.LogCaptureFixture) -> None:
    """The service's PostgreSQL server is read, not assumed: with autovacuum off (this test server's setting)
    the worker and the server log the advice to turn it on; with it on, they say nothing."""
    from service.serve import _advise

    with postgres_engine.connect() as conn:
        setting = conn.execute(text("SHOW autovacuum")).scalar()
    advice = database_advice(postgres_engine)
    if setting == "on":
        assert advice == []
    else:
        assert len(advice) == 1 and "autovacuum off" in advice[0] and "VACUUM (ANALYZE)" in advice[0]
    with caplog.at_level("WARNING", logger="labelagent.serve"):
        _advise(postgres_engine)
    assert [r.getMessage() for r in caplog.records if r.name == "labelagent.serve"] == advice
