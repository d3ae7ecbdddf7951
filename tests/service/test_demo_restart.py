"""``labelagent demo`` as a process: stopped and started again on the same database it continues the stream where
it stopped (every row sent once, in order, none skipped), and ``--reset`` starts over on an empty database."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from policies import InputError
from service.offline.demo.dataset import row_key
from service.offline.demo.run import reset_database
from service.offline.liveserver import LiveDemo
from service.settings import Settings
from service.store import SqlStore
from service.store.db import make_engine
from service.store.migrate import upgrade

PROJECT = "sms_spam"
OPTIONS = ["--rate", "20", "--review-delay", "0.2", "--log-level", "WARNING"]


def streamed_past(live: LiveDemo, key: str, rows: int, timeout: float = 120.0) -> int:
    """Wait until the demo says it has sent more than ``rows`` rows; its position."""
    deadline = time.monotonic() + timeout
    with httpx.Client(base_url=live.url, headers={"X-API-Key": key}, timeout=30.0) as api:
        while (position := api.get(f"/projects/{PROJECT}/demo").json()["position"]) <= rows:
            assert time.monotonic() < deadline, f"the demo sent {position} rows in {timeout:.0f} s"
            time.sleep(0.2)  # the stream moves on its own: nothing to wait on but its position
    return position


def demo_log(url: str) -> tuple[list[str], list[tuple[str, dict[str, object]]], str]:
    """The project's item keys in arrival order, its demo.* audit entries, and a new operator key."""
    engine = make_engine(url)
    try:
        store = SqlStore(engine, Settings(database_url=url))
        keys = [it.external_id for it in store.items.list_items(PROJECT, limit=10_000)]
        events = [(e.action, e.detail) for e in store.audit.list_audit(PROJECT,
                                                                       limit=1000) if e.action.startswith("demo.")]
        return keys, events, store.projects.create_key(name="test", role="operator")[0]
    finally:
        engine.dispose()


def test_a_restarted_demo_continues_the_stream_and_reset_starts_over(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    engine = make_engine(url)
    upgrade(engine)
    key = SqlStore(engine, Settings(database_url=url)).projects.create_key(name="test", role="operator")[0]
    engine.dispose()

    with LiveDemo(url, log=tmp_path / "run1.log", options=OPTIONS) as live:
        streamed_past(live, key, 40)
    first, events, key = demo_log(url)
    assert [a for a, _ in events] == ["demo.started", "demo.stopped"]
    assert events[0][1]["position"] == 0 and events[1][1]["position"] == len(first) > 40

    with LiveDemo(url, log=tmp_path / "run2.log", options=OPTIONS) as live:
        streamed_past(live, key, len(first) + 40)
    second, events, key = demo_log(url)
    assert [a for a, _ in events] == ["demo.started", "demo.stopped"] * 2
    assert events[2][1]["position"] == len(first) and events[3][1]["position"] == len(second)
    assert second == [row_key(i) for i in range(len(second))]  # each row once, in stream order, none skipped

    with LiveDemo(url, log=tmp_path / "run3.log", options=[*OPTIONS, "--reset"]):
        pass
    _, events, _ = demo_log(url)
    assert [a for a, _ in events] == ["demo.started", "demo.stopped"] and events[0][1]["position"] == 0


def test_reset_deletes_the_sqlite_demo_database_and_refuses_other_databases(tmp_path: Path) -> None:
    files = [tmp_path / name for name in ("demo.db", "demo.db-wal", "demo.db-shm")]
    for f in files:
        f.write_bytes(b"x")
    keep = tmp_path / "other.db"
    keep.write_bytes(b"x")
    reset_database(f"sqlite:///{files[0]}")
    assert [f.exists() for f in files] == [False] * 3 and keep.exists()
    reset_database(f"sqlite:///{files[0]}")  # nothing to delete: no error
    with pytest.raises(InputError, match="--reset deletes a SQLite demo database file"):
        reset_database("postgresql+psycopg://postgres@127.0.0.1:5432/test")
