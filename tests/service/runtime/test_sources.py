"""``labelagent worker --source URL`` picks the broker by the URL's scheme; a wrong URL is exit code 2 with a
message (before the database is touched), never a traceback."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from policies import InputError
from service.runtime.sources import broker_of, check_source

ROOT = Path(__file__).resolve().parents[3]


def test_the_scheme_picks_the_broker() -> None:
    assert [broker_of(u) for u in ("redis://h/s", "rediss://h/s", "nats://h/s", "tls://h/s", "amqp://h/?queue=q",
                                   "AMQPS://h/?queue=q")] == ["redis", "redis", "nats", "nats", "amqp", "amqp"]
    for url in ("kafka://h:9092/items", "h:6379/items", "items"):
        with pytest.raises(InputError, match=r"redis://.*nats://.*amqp://"):
            broker_of(url)
    check_source("nats://127.0.0.1:4222/items?durable=d")
    check_source("amqp://guest:guest@127.0.0.1:5672/?queue=items")
    with pytest.raises(InputError, match="unknown option 'colour'"):
        check_source("nats://127.0.0.1:4222/items?colour=red")


@pytest.mark.parametrize(("url", "says"), [
    ("kafka://127.0.0.1:9092/items", "scheme 'kafka' is not supported; use redis:// or rediss://"),
    ("nats://127.0.0.1:4222/", "name the stream"),
    ("redis://127.0.0.1:6379/items?colour=red", "unknown option 'colour'"),
    ("amqp://guest:guest@127.0.0.1:5672/", "name the queue"),
])
def test_worker_refuses_a_bad_source_with_exit_code_2(tmp_path: Path, url: str, says: str) -> None:
    db = tmp_path / "never.db"
    done = subprocess.run([sys.executable, "-m", "service.cli", "worker", "--source", url, "--db", f"sqlite:///{db}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2, done.stderr
    assert says in done.stderr and "Traceback" not in done.stderr
    assert not db.exists(), "the source is checked before the database is opened"
