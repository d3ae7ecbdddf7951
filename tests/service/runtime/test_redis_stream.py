"""Redis stream ingestion: parsing, dead letters, idempotent replays, and a consumer that died before acknowledging
whose entries ``labelagent worker --source`` takes over with XAUTOCLAIM (every item stored and labeled once)."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from policies import InputError
from service.runtime.sources.redis_stream import RedisStreamSource, StreamAddress, parse_entry
from service.settings import Settings
from service.store import SqlStore
from tests.conftest import unreachable
from tests.service.runtime.helpers import (
    broker_policy,
    run_source_worker,
    runtime_policy,
    stream_items,
)
from tools.base import Item

REDIS_URL = os.environ.get("LABELAGENT_TEST_REDIS_URL", "redis://127.0.0.1:6379")


@pytest.fixture
def redis_client() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL, decode_responses=True, socket_connect_timeout=3)
    try:
        client.ping()
    except redis.RedisError as exc:
        unreachable(f"Redis at {REDIS_URL}", exc, "Redis")
    yield client
    client.close()


@pytest.fixture
def stream(redis_client: redis.Redis) -> Iterator[str]:
    """A stream name of this test only; the stream and its dead letters are deleted afterwards."""
    name = f"labelagent-test-{uuid.uuid4().hex[:12]}"
    yield name
    redis_client.delete(name, f"{name}:dead")


def message(project: str, item: Item, **extra: str) -> dict[str, str]:
    return {"project": project, "external_id": item.key,
            "data": json.dumps({"text": item.text, "metadata": item.metadata}), **extra}


def test_stream_address_and_entry_parsing() -> None:
    a = StreamAddress.parse("redis://user:secret@redis.example:6380/items?group=g&consumer=c1&claim_idle_ms=500")
    assert (a.host, a.port, a.stream, a.group, a.consumer, a.username, a.password) == (
        "redis.example", 6380, "items", "g", "c1", "user", "secret")
    assert (a.dead_letter, a.claim_idle_ms, a.ssl) == ("items:dead", 500, False)
    for bad in ("http://x/items", "redis://x:6379/", "redis://x/items?colour=red", "redis://x/items?count=many"):
        with pytest.raises(InputError):
            StreamAddress.parse(bad)
    project, item, label = parse_entry({"project": "p", "external_id": "k", "label": "spam",
                                        "data": '{"text": "hi", "metadata": {"lang": "en"}}'}, 256)
    assert (project, item.key, item.text, item.metadata, label) == ("p", "k", "hi", {"lang": "en"}, "spam")
    for fields, reason in [({"external_id": "k", "data": "{}"}, "project"),
                           ({"project": "p", "data": "{}"}, "external_id"),
                           ({"project": "p", "external_id": "k"}, "data"),
                           ({"project": "p", "external_id": "k", "data": "{nope"}, "not JSON"),
                           ({"project": "p", "external_id": "k", "data": "[1]"}, "object"),
                           ({"project": "p", "external_id": "k", "data": "{}"}, "neither"),
                           ({"project": "p", "external_id": "k", "data": '{"txt": "x"}'}, "unknown key"),
                           ({"project": "p", "external_id": "k" * 300, "data": '{"text": "x"}'}, "longer")]:
        with pytest.raises(InputError, match=reason):
            parse_entry(fields, 256)


def test_handle_stores_once_and_dead_letters_bad_entries(store: SqlStore, redis_client: redis.Redis,
                                                         stream: str) -> None:
    policy = runtime_policy()
    store.projects.create_project(policy.project, policy)
    project = policy.project
    items = stream_items(20)
    for item in items:
        redis_client.xadd(stream, message(project, item))
    redis_client.xadd(stream, message(project, items[3]))  # a replayed message
    redis_client.xadd(stream, {"project": project, "external_id": "bad-json", "data": "{oops"})
    redis_client.xadd(stream, message("no-such-project", Item(key="lost", text="x")))
    redis_client.xadd(stream, message(project, Item(key="bad-label", text="x"), label="maybe"))
    notified: list[str] = []

    class Sink:
        def notify(self, p: str) -> None:
            notified.append(p)

    async def consume() -> None:
        address = StreamAddress.parse(f"{REDIS_URL}/{stream}?consumer=c1")
        source = RedisStreamSource(store, address, sink=Sink(), block_ms=50)
        await source.ensure_group()
        assert await source.read_new() == 24
        assert await source.read_new() == 0
        assert (source.totals.stored, source.totals.duplicates, source.totals.dead) == (20, 1, 3)
        await source.redis.aclose()

    asyncio.run(consume())
    assert store.items.count_items(project)["pending"] == 20 and notified == [project]
    assert redis_client.xpending(stream, "labelagent")["pending"] == 0, "everything acknowledged"
    dead = {f["external_id"]: f for _, f in redis_client.xrange(f"{stream}:dead")}
    assert set(dead) == {"bad-json", "lost", "bad-label"}
    assert "not JSON" in dead["bad-json"]["reason"] and "does not exist" in dead["lost"]["reason"]
    assert "maybe" in dead["bad-label"]["reason"] and dead["lost"]["source_stream"] == stream


@pytest.mark.slow
def test_a_consumer_dies_before_acknowledging_and_the_worker_reclaims(store: SqlStore, redis_client: redis.Redis,
                                                                      stream: str) -> None:
    n = 2000
    policy = broker_policy()
    store.projects.create_project(policy.project, policy)
    project = policy.project
    items = stream_items(n)
    redis_client.xgroup_create(stream, "labelagent", id="0", mkstream=True)
    pipe = redis_client.pipeline()
    for item in items:
        pipe.xadd(stream, message(project, item))
    for item in items[1000:1050]:
        pipe.xadd(stream, message(project, item))  # at-least-once producers replay messages
    pipe.execute()

    # A consumer reads 300 entries, stores the first 100 of them, and dies before acknowledging any.
    dead = redis_client.xreadgroup("labelagent", "doomed", {stream: ">"}, count=300)[0][1]
    assert len(dead) == 300
    store.items.ingest(project, [Item(key=f["external_id"], text=json.loads(f["data"])["text"]) for _, f in dead[:100]])

    source = f"{REDIS_URL}/{stream}?consumer=rescuer&claim_idle_ms=300&count=200"
    run_source_worker(store, project, source, n,
                      drained=lambda: redis_client.xpending(stream, "labelagent")["pending"] == 0,
                      drained_what="every entry acknowledged")
    consumers = {c["name"]: c for c in redis_client.xinfo_consumers(stream, "labelagent")}
    assert consumers["doomed"]["pending"] == 0, "the dead consumer's entries were taken over"
    assert redis_client.xlen(f"{stream}:dead") == 0


def test_worker_refuses_a_database_without_schema(tmp_path: Path) -> None:
    from policies import ConflictError
    from service.serve import run_worker

    with pytest.raises(ConflictError, match="labelagent db upgrade"):
        run_worker(Settings(database_url=f"sqlite:///{tmp_path / 'empty.db'}"), name="w")
