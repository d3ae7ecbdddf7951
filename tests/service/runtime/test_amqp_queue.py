"""RabbitMQ ingestion against the local broker: URL parsing, dead letters with their reason, idempotent
redeliveries, a database error requeueing the batch, and a consumer that died before acknowledging whose messages
``labelagent worker --source amqp://...`` gets back (every item stored and labeled once)."""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from policies import InputError
from service.runtime.sources.amqp_queue import REASON_HEADER, AmqpAddress, AmqpQueueSource
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

AMQP_URL = os.environ.get("LABELAGENT_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")


@pytest.fixture(scope="module")
def rabbitmq() -> str:
    async def probe() -> None:
        conn = await aio_pika.connect(AMQP_URL, timeout=3)
        await conn.close()

    try:
        asyncio.run(probe())
    except Exception as exc:
        unreachable(f"RabbitMQ at {AMQP_URL}", repr(exc), "RabbitMQ")
    return AMQP_URL


@pytest.fixture
def queue(rabbitmq: str) -> Iterator[str]:
    """A queue name of this test only; the queue and its dead-letter queue are deleted afterwards."""
    name = f"labelagent-test-{uuid.uuid4().hex[:12]}"
    yield name

    async def cleanup() -> None:
        conn = await aio_pika.connect(AMQP_URL)
        channel = await conn.channel()
        for q in (name, f"{name}.dead"):
            await channel.queue_delete(q)
        await conn.close()

    asyncio.run(cleanup())



def source_url(queue: str, **options: Any) -> str:
    query = "&".join(f"{k}={v}" for k, v in {"queue": queue, **options}.items())
    return f"{AMQP_URL.rstrip('/')}/?{query}"


async def publish(queue: str, payloads: list[bytes]) -> None:
    conn = await aio_pika.connect(AMQP_URL)
    channel = await conn.channel()  # publisher confirms: each publish waits for the broker
    for p in payloads:
        await channel.default_exchange.publish(aio_pika.Message(p, delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                                               routing_key=queue)
    await conn.close()


async def drain(queue: str) -> list[tuple[bytes, dict[str, Any]]]:
    """(body, headers) of every message in ``queue``, taken off it."""
    conn = await aio_pika.connect(AMQP_URL)
    channel = await conn.channel()
    q = await channel.declare_queue(queue, passive=True)
    out: list[tuple[bytes, dict[str, Any]]] = []
    while (msg := await q.get(no_ack=True, fail=False)) is not None:
        out.append((bytes(msg.body), dict(msg.headers or {})))
    await conn.close()
    return out


async def ready_count(queue: str) -> int:
    """Messages in the queue waiting for a consumer (not counting those delivered and unacknowledged)."""
    conn = await aio_pika.connect(AMQP_URL)
    channel = await conn.channel()
    q = await channel.declare_queue(queue, passive=True)
    await conn.close()
    return int(q.declaration_result.message_count or 0)


def test_amqp_address_parsing() -> None:
    a = AmqpAddress.parse("amqps://u:s%40cret@mq.example:5671/labeling?queue=items&prefetch=50&heartbeat=30")
    assert (a.url, a.queue, a.dead_letter, a.prefetch) == (
        "amqps://u:s%40cret@mq.example:5671/labeling?heartbeat=30", "items", "items.dead", 50)
    assert a.shown == "amqps://mq.example:5671/labeling"
    for root in ("amqp://mq/?queue=q", "amqp://mq?queue=q", "amqp://mq/%2F?queue=q"):
        assert AmqpAddress.parse(root).url == "amqp://mq/%2F", "the default virtual host"
    assert AmqpAddress.parse("amqp://mq/?queue=q&dead=bad").dead_letter == "bad"
    for bad in ("redis://x/items", "amqp://x/", "amqp://x/?queue=q&colour=red", "amqp://x/?queue=q&prefetch=many",
                "amqp://x/?queue=q&prefetch=0", "amqp://x/?queue=q&dead=q"):
        with pytest.raises(InputError):
            AmqpAddress.parse(bad)


def test_handle_stores_once_dead_letters_and_goes_on(store: SqlStore, queue: str) -> None:
    policy = runtime_policy()
    store.projects.create_project(policy.project, policy)
    project = policy.project
    items = stream_items(20)
    notified: list[str] = []

    class Sink:
        def notify(self, p: str) -> None:
            notified.append(p)

    async def consume() -> None:
        source = AmqpQueueSource(store, AmqpAddress.parse(source_url(queue)), sink=Sink(), wait=2)
        await source.setup()  # declares the queue and the dead-letter queue
        await publish(queue, mixed_messages(project, items))
        n = 0
        while n < 25:
            got = await source.read_new()
            assert got, "every message published is received"
            n += got
        assert (source.totals.stored, source.totals.duplicates, source.totals.dead) == (20, 1, 4)
        await publish(queue, [message_body(project, Item(key="after", text="see you at lunch"))])
        assert await source.read_new() == 1, "the consumer goes on after dead letters"
        source.wait = 0.2
        assert await source.read_new() == 0
        assert source.totals.stored == 21
        await source.close()

    asyncio.run(consume())
    assert store.items.count_items(project)["pending"] == 21 and set(notified) == {project}
    assert asyncio.run(ready_count(queue)) == 0, "everything acknowledged: nothing came back on close"
    dead = asyncio.run(drain(f"{queue}.dead"))
    by_key = {(json.loads(b)["external_id"] if b.startswith(b"{") else "raw"): h for b, h in dead}
    assert len(dead) == 4 and set(by_key) == {"bad-json", "raw", "lost", "bad-label"}
    assert "not JSON" in by_key["bad-json"][REASON_HEADER] and "not JSON" in by_key["raw"][REASON_HEADER]
    assert "does not exist" in by_key["lost"][REASON_HEADER] and "maybe" in by_key["bad-label"][REASON_HEADER]
    assert by_key["lost"]["labelagent-source-queue"] == queue


def test_a_database_error_requeues_the_batch(store: SqlStore, queue: str, tmp_path: Path) -> None:
    """A store whose database has no schema fails every ingest: the batch is requeued, nothing dead-lettered,
    and a healthy consumer gets the same messages and stores each once."""
    from sqlalchemy import create_engine

    policy = runtime_policy()
    store.projects.create_project(policy.project, policy)
    project = policy.project
    items = stream_items(10)
    broken = SqlStore(create_engine(f"sqlite:///{tmp_path / 'no-schema.db'}"), store.settings)
    address = AmqpAddress.parse(source_url(queue))

    async def consume() -> None:
        failing = AmqpQueueSource(broken, address, wait=2)
        await failing.setup()
        await publish(queue, [message_body(project, it) for it in items])
        msgs: list[Any] = []
        while len(msgs) < 10:
            got = await failing.fetch()
            assert got, "the messages published are received"
            msgs.extend(got)
        with pytest.raises(Exception, match="no such table"):
            await failing.handle(msgs)
        assert failing.totals.dead == 0
        await failing.close()
        healthy = AmqpQueueSource(store, address, wait=2)
        await healthy.setup()
        got = 0
        while got < 10:
            n = await healthy.read_new()
            assert n, "the requeued messages come back"
            got += n
        assert (healthy.totals.stored, healthy.totals.dead) == (10, 0)
        await healthy.close()

    asyncio.run(consume())
    assert store.items.count_items(project)["pending"] == 10
    assert asyncio.run(ready_count(queue)) == 0
    assert asyncio.run(drain(f"{queue}.dead")) == []


@pytest.mark.slow
def test_a_consumer_dies_before_acknowledging_and_the_worker_gets_its_messages(store: SqlStore,
                                                                              queue: str) -> None:
    n = 2000
    policy = broker_policy()
    store.projects.create_project(policy.project, policy)
    project = policy.project
    items = stream_items(n)
    source = source_url(queue, prefetch=200)

    async def doomed() -> None:
        """Publish (with replays), receive 300 messages, store the first 100 of them and die (the connection
        closes) before acknowledging any."""
        setup = AmqpQueueSource(store, AmqpAddress.parse(source_url(queue, prefetch=300)), wait=5)
        await setup.setup()
        await publish(queue, [message_body(project, it) for it in [*items, *items[1000:1050]]])
        msgs: list[Any] = []
        while len(msgs) < 300:
            got = await setup.fetch()
            assert got, "the messages published are received"
            msgs.extend(got)
        assert len(msgs) == 300, "prefetch bounds what one consumer holds unacknowledged"
        first = [json.loads(m.body) for m in msgs[:100]]
        store.items.ingest(project, [Item(key=f["external_id"], text=f["data"]["text"]) for f in first])
        await setup.close()

    asyncio.run(doomed())
    assert asyncio.run(ready_count(queue)) == n + 50, "the unacknowledged messages are back in the queue"
    run_source_worker(store, project, source, n, drained=lambda: asyncio.run(ready_count(queue)) == 0,
                      drained_what="every message received")
    assert asyncio.run(ready_count(queue)) == 0, "every message acknowledged: none came back when the worker left"
    assert asyncio.run(drain(f"{queue}.dead")) == []
