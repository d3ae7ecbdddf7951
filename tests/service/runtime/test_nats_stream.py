"""NATS JetStream ingestion against the local server: URL parsing, dead letters with their reason, idempotent
redeliveries, a database error giving the batch back, and a consumer that died before acknowledging whose messages
``labelagent worker --source nats://...`` gets redelivered (every item stored and labeled once)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import nats
import nats.errors
import nats.js.errors
import pytest

from policies import InputError
from service.runtime.sources.nats_stream import REASON_HEADER, NatsAddress, NatsStreamSource
from service.store import SqlStore
from tests.conftest import unreachable
from tests.service.runtime.helpers import (
    broker_policy,
    message_body,
    mixed_messages,
    run_source_worker,
    runtime_policy,
    stream_items,
)
from tools.base import Item

NATS_URL = os.environ.get("LABELAGENT_TEST_NATS_URL", "nats://127.0.0.1:4222")
FETCH_SECONDS = 10.0  # the longest wait for messages that are known to be there (a loaded machine), never a sync


async def _connect() -> Any:
    return await nats.connect(NATS_URL, connect_timeout=3, allow_reconnect=False, max_reconnect_attempts=0)


@pytest.fixture(scope="module")
def nats_server() -> str:
    async def probe() -> None:
        nc = await _connect()
        await nc.jetstream().account_info()
        await nc.close()

    try:
        asyncio.run(probe())
    except Exception as exc:
        unreachable(f"NATS JetStream at {NATS_URL}", repr(exc), "NATS")
    return NATS_URL


@pytest.fixture
def stream(nats_server: str) -> Iterator[str]:
    """A stream name of this test only; the stream (and a separate dead-letter stream) are deleted afterwards."""
    name = f"labelagent_test_{uuid.uuid4().hex[:12]}"
    yield name

    async def cleanup() -> None:
        nc = await _connect()
        for s in (name, f"{name}_dead"):
            with contextlib.suppress(nats.js.errors.NotFoundError):
                await nc.jetstream().delete_stream(s)
        await nc.close()

    asyncio.run(cleanup())



async def publish(subject: str, payloads: list[bytes]) -> None:
    nc = await _connect()
    js = nc.jetstream()
    for p in payloads:
        await js.publish(subject, p)
    await nc.close()


async def dead_letters(stream: str, subject: str) -> list[tuple[dict[str, Any], dict[str, str]]]:
    """(body, headers) of every message on the dead-letter subject, read by an ephemeral consumer."""
    nc = await _connect()
    sub = await nc.jetstream().pull_subscribe(subject, stream=stream)
    out: list[tuple[dict[str, Any], dict[str, str]]] = []
    # every dead letter is in the stream already: read until the consumer has none pending (no timing involved;
    # a fetch's timeout is only a bound on a loaded machine)
    while (pending := (await sub.consumer_info()).num_pending) > 0:
        for msg in await sub.fetch(min(pending, 100), timeout=FETCH_SECONDS):
            raw = msg.data.decode(errors="replace")
            out.append((json.loads(raw) if raw.startswith("{") else {"raw": raw}, dict(msg.headers or {})))
    await nc.close()
    return out


async def read_at_least(source: NatsStreamSource, n: int) -> int:
    """Read (and handle) messages until ``n`` arrived; the source's fetch timeout bounds each wait, never the count."""
    got = 0
    for _ in range(n + 20):
        if got >= n:
            break
        got += await source.read_new()
    assert got >= n, f"only {got} of the {n} messages published were fetched"
    return got


async def consumer_state(stream: str, durable: str = "labelagent") -> tuple[int, int, int]:
    """(messages not yet delivered, delivered but unacknowledged, redelivered) of the durable consumer."""
    nc = await _connect()
    info = await nc.jetstream().consumer_info(stream, durable)
    await nc.close()
    return info.num_pending, info.num_ack_pending, info.num_redelivered


def test_nats_address_parsing() -> None:
    a = NatsAddress.parse("nats://u:s%40cret@nats.example:4333/items?subject=items.new&durable=d1&ack_wait=5"
                          "&max_deliver=10&batch=50")
    assert (a.server, a.stream, a.subject, a.durable, a.user, a.password) == (
        "nats://nats.example:4333", "items", "items.new", "d1", "u", "s@cret")
    assert (a.dead_letter, a.ack_wait, a.max_deliver, a.batch) == ("items.dead", 5.0, 10, 50)
    d = NatsAddress.parse("tls://nats.example/items")
    assert (d.server, d.subject, d.dead_letter, d.durable, d.max_deliver) == (
        "tls://nats.example:4222", "items", "items.dead", "labelagent", -1)
    for bad in ("redis://x/items", "nats://x:4222/", "nats://x/items?colour=red", "nats://x/items?batch=many",
                "nats://x/it.ems", "nats://x/items?durable=a.b", "nats://x/items?dead=items",
                "nats://x/items?max_deliver=0", "nats://x/items?ack_wait=-1"):
        with pytest.raises(InputError):
            NatsAddress.parse(bad)


def test_handle_stores_once_dead_letters_and_goes_on(store: SqlStore, stream: str) -> None:
    policy = runtime_policy()
    store.projects.create_project(policy.project, policy)
    project = policy.project
    items = stream_items(20)
    notified: list[str] = []

    class Sink:
        def notify(self, p: str) -> None:
            notified.append(p)

    async def consume() -> None:
        source = NatsStreamSource(store, NatsAddress.parse(f"{NATS_URL}/{stream}?batch=100"), sink=Sink(),
                                  fetch_timeout=FETCH_SECONDS)
        await source.setup()  # creates the stream and the durable consumer
        await publish(stream, mixed_messages(project, items))
        assert await read_at_least(source, 25) == 25
        assert (source.totals.stored, source.totals.duplicates, source.totals.dead) == (20, 1, 4)
        # the consumer goes on after dead letters
        await publish(stream, [message_body(project, Item(key="after", text="see you at lunch"))])
        assert await read_at_least(source, 1) == 1
        source.fetch_timeout = 1.0  # nothing more may come: a short wait can only let a stray message through later
        assert await source.read_new() == 0
        assert source.totals.stored == 21
        await source.close()

    asyncio.run(consume())
    assert store.items.count_items(project)["pending"] == 21 and set(notified) == {project}
    assert asyncio.run(consumer_state(stream))[:2] == (0, 0), "everything acknowledged (or terminated)"
    dead = asyncio.run(dead_letters(stream, f"{stream}.dead"))
    assert len(dead) == 4
    by_key = {b.get("external_id", "raw"): h for b, h in dead}
    assert set(by_key) == {"bad-json", "raw", "lost", "bad-label"}
    assert "not JSON" in by_key["bad-json"][REASON_HEADER]
    assert "not JSON" in by_key["raw"][REASON_HEADER]
    assert "does not exist" in by_key["lost"][REASON_HEADER] and "maybe" in by_key["bad-label"][REASON_HEADER]
    assert by_key["lost"]["Labelagent-Source-Subject"] == stream


def test_a_database_error_gives_the_batch_back(store: SqlStore, stream: str, tmp_path: Path) -> None:
    """A store whose database has no schema fails every ingest: the batch is nak'ed, nothing dead-lettered,
    and a healthy consumer gets the same messages redelivered and stores each once."""
    from sqlalchemy import create_engine

    policy = runtime_policy()
    store.projects.create_project(policy.project, policy)
    project = policy.project
    items = stream_items(10)
    broken = SqlStore(create_engine(f"sqlite:///{tmp_path / 'no-schema.db'}"), store.settings)
    url = f"{NATS_URL}/{stream}"

    async def consume() -> None:
        failing = NatsStreamSource(broken, NatsAddress.parse(url), fetch_timeout=FETCH_SECONDS)
        await failing.setup()
        await publish(stream, [message_body(project, it) for it in items])
        msgs: list[Any] = []
        for _ in range(30):  # a loaded server may hand them out in more than one fetch
            if len(msgs) >= 10:
                break
            msgs += await failing.fetch()
        assert len(msgs) == 10
        with pytest.raises(Exception, match="no such table"):
            await failing.handle(msgs, on_error_delay=0.05)
        assert failing.totals.dead == 0
        await failing.close()
        healthy = NatsStreamSource(store, NatsAddress.parse(url), fetch_timeout=FETCH_SECONDS)
        await healthy.setup()
        assert await read_at_least(healthy, 10) == 10, "the nak'ed messages come back"
        assert (healthy.totals.stored, healthy.totals.dead) == (10, 0)
        await healthy.close()

    asyncio.run(consume())
    assert store.items.count_items(project)["pending"] == 10
    assert asyncio.run(consumer_state(stream))[:2] == (0, 0), "everything acknowledged"
    assert asyncio.run(dead_letters(stream, f"{stream}.dead")) == []


@pytest.mark.slow
def test_a_consumer_dies_before_acknowledging_and_the_worker_gets_its_messages(store: SqlStore,
                                                                              stream: str) -> None:
    n = 2000
    policy = broker_policy()
    store.projects.create_project(policy.project, policy)
    project = policy.project
    items = stream_items(n)
    # ack_wait: how soon the dead consumer's messages come back to the worker. Nothing below depends on a step
    # finishing within it: a message redelivered while the doomed consumer still fetches counts once (by its stream
    # sequence), and the worker's redeliveries are idempotent.
    source = f"{NATS_URL}/{stream}?ack_wait=3&batch=200"

    async def doomed() -> None:
        """Create the consumer, publish (with replays), fetch 300 distinct messages, store the first 100 of them and
        die (the connection closes) before acknowledging any."""
        setup = NatsStreamSource(store, NatsAddress.parse(source))
        await setup.setup()
        await setup.close()
        await publish(stream, [message_body(project, it) for it in [*items, *items[1000:1050]]])
        nc = await _connect()
        sub = await nc.jetstream().pull_subscribe_bind(durable="labelagent", stream=stream)
        msgs: dict[int, Any] = {}  # by stream sequence: a redelivery to this consumer is the same message
        for _ in range(60):  # each fetch waits at most FETCH_SECONDS for messages known to be in the stream
            if len(msgs) >= 300:
                break
            with contextlib.suppress(nats.errors.TimeoutError):
                for m in await sub.fetch(300 - len(msgs), timeout=FETCH_SECONDS):
                    msgs.setdefault(m.metadata.sequence.stream, m)
        assert len(msgs) >= 300, f"only {len(msgs)} distinct messages fetched"
        first = [json.loads(m.data) for m in list(msgs.values())[:100]]
        store.items.ingest(project, [Item(key=f["external_id"], text=f["data"]["text"]) for f in first])
        await nc.close()

    asyncio.run(doomed())
    assert asyncio.run(consumer_state(stream))[1] >= 300, "300 messages delivered and never acknowledged"
    run_source_worker(store, project, source, n, drained=lambda: asyncio.run(consumer_state(stream))[:2] == (0, 0),
                      drained_what="every message acknowledged")
    assert asyncio.run(dead_letters(stream, f"{stream}.dead")) == []
