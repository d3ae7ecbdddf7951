"""Ingest items from a RabbitMQ (AMQP 0-9-1) queue: ``labelagent worker --source amqp://USER:PASS@HOST:PORT/VHOST?queue=Q``.

Message format: one message is one item; its body is a JSON object with the fields ``project``, ``external_id``,
``data`` (an object with ``text`` and/or ``metadata``; a string holding that JSON works too) and optionally
``label`` (see service/runtime/sources/common.py), e.g.
``{"project": "sms_spam", "external_id": "msg-1", "data": {"text": "WIN a prize!"}}``.

Delivery is at least once and storage is idempotent, so every item is stored exactly once: the queue is declared
durable (an existing queue is used as it is), messages are consumed with manual acknowledgement (at most
``prefetch`` unacknowledged at a time), stored in batches with ``store.items.ingest`` (a redelivered message is
reported as a duplicate) and acknowledged only after the items are committed. A consumer that dies before
acknowledging leaves its messages unacknowledged: RabbitMQ requeues them when its connection closes. A malformed
message (or one naming an unknown project or label) is published, persistent, to the dead-letter queue
(``QUEUE.dead`` by default, declared durable) with its body unchanged and the headers ``labelagent-reason`` and
``labelagent-source-queue``, then acknowledged; it never stops the consumer. On a database error the batch is
rejected with ``requeue=True`` and comes back.

URL options (query string): ``queue`` (required), ``dead`` (the dead-letter queue), ``prefetch`` (unacknowledged
messages at a time, also the largest batch; default 500); ``heartbeat``, ``connection_timeout`` and the TLS
options ``cafile``, ``capath``, ``keyfile``, ``certfile``, ``no_verify_ssl`` go to the connection (aio-pika).
The path is the virtual host (``/`` or empty: the default one; ``%2F`` works too). ``amqps://`` uses TLS.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, unquote, urlencode, urlsplit, urlunsplit

import aio_pika
import aiormq.exceptions
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage, AbstractQueue

from policies import InputError
from service.runtime.feedback import FeedbackSink
from service.runtime.sources.common import BatchIngestor, Handled, query_options
from service.store import SqlStore

log = logging.getLogger("labelagent.sources.amqp")

REASON_HEADER = "labelagent-reason"
CONNECTION_OPTIONS = {"heartbeat", "connection_timeout", "cafile", "capath", "keyfile", "certfile", "no_verify_ssl"}


@dataclass(frozen=True, slots=True)
class AmqpAddress:
    """Where to consume: the connection URL (without our options), the queue and the dead-letter queue."""

    url: str
    queue: str
    dead_letter: str
    prefetch: int = 500

    @classmethod
    def parse(cls, url: str) -> AmqpAddress:
        parts = urlsplit(url)
        if parts.scheme not in ("amqp", "amqps"):
            raise InputError(f"source {url!r}: use amqp://USER:PASS@HOST:PORT/VHOST?queue=QUEUE (amqps:// for TLS)")
        query = query_options(url, parts.query, {"queue", "dead", "prefetch", *CONNECTION_OPTIONS})
        queue = query.get("queue")
        if not queue:
            raise InputError(f"source {url!r}: name the queue, e.g. amqp://guest:guest@127.0.0.1:5672/?queue=items")
        dead = query.get("dead") or f"{queue}.dead"
        if dead == queue:
            raise InputError(f"source {url!r}: the dead-letter queue must differ from the queue consumed")
        try:
            prefetch = int(query.get("prefetch", 500))
        except ValueError as exc:
            raise InputError(f"source {url!r}: {exc}") from None
        if not 1 <= prefetch <= 65535:
            raise InputError(f"source {url!r}: prefetch is between 1 and 65535")
        vhost = unquote(parts.path[1:]) if len(parts.path) > 1 else "/"
        connection = urlunsplit((parts.scheme, parts.netloc, "/" + quote(vhost, safe=""),
                                 urlencode({k: v for k, v in query.items() if k in CONNECTION_OPTIONS}), ""))
        return cls(url=connection, queue=queue, dead_letter=dead, prefetch=prefetch)

    @property
    def shown(self) -> str:
        """The connection URL without its password, for logs."""
        parts = urlsplit(self.url)
        host = parts.netloc.rsplit("@", 1)[-1]
        return urlunsplit((parts.scheme, host, parts.path, "", ""))


class AmqpQueueSource:
    """Consumes one queue into the store. ``run`` until ``stopping()``; ``handle`` is one batch's work."""

    def __init__(self, store: SqlStore, address: AmqpAddress, *, sink: FeedbackSink | None = None,
                 wait: float = 1.0) -> None:
        self.store = store
        self.address = address
        self.ingestor: BatchIngestor[int] = BatchIngestor(store, sink)
        self.wait = wait
        self.totals = Handled()
        self.connection: AbstractConnection | None = None
        self.channel: AbstractChannel | None = None
        self._buffer: asyncio.Queue[AbstractIncomingMessage] = asyncio.Queue()

    async def setup(self) -> None:
        """Connect, declare the queue and the dead-letter queue (durable), and start consuming into a buffer."""
        await self.close()
        a = self.address
        self.connection = await aio_pika.connect(a.url, timeout=10)
        self.channel = await self.connection.channel(publisher_confirms=True)
        queue = await self._declare(a.queue)
        await self._declare(a.dead_letter)
        await self.channel.set_qos(prefetch_count=a.prefetch)
        self._buffer = asyncio.Queue()
        await queue.consume(self._buffer.put, no_ack=False)

    async def _declare(self, name: str) -> AbstractQueue:
        """The queue ``name``: used as it is when it exists (whatever its arguments), else declared durable."""
        assert self.connection is not None and self.channel is not None
        probe = await self.connection.channel()  # a failed passive declare closes its channel: not ours
        try:
            await probe.declare_queue(name, passive=True)
            exists = True
        except aiormq.exceptions.ChannelNotFoundEntity:
            exists = False
        finally:
            with contextlib.suppress(Exception):
                await probe.close()
        if not exists:
            log.info("declaring queue %s (durable)", name)
        return await self.channel.declare_queue(name, passive=exists, durable=not exists)

    async def close(self) -> None:
        """Close the connection: messages received and not acknowledged go back to the queue."""
        if self.connection is not None and not self.connection.is_closed:
            with contextlib.suppress(Exception):
                await self.connection.close()
        self.connection, self.channel = None, None

    async def run(self, stopping: Callable[[], bool]) -> None:
        """Receive, store and acknowledge until ``stopping()``; errors are logged and retried, never raised."""
        a = self.address
        log.info("consuming %s queue %s", a.shown, a.queue)
        ready, backoff = False, 0.5
        while not stopping():
            try:
                if not ready:
                    await self.setup()
                    ready = True
                await self.read_new()
                backoff = 0.5
            except Exception:
                log.exception("queue %s: consuming failed; retrying in %.1fs", a.queue, backoff)
                ready = self.connection is not None and not self.connection.is_closed and \
                    self.channel is not None and not self.channel.is_closed
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)

    async def fetch(self) -> list[AbstractIncomingMessage]:
        """The messages received: waits up to ``wait`` seconds for the first, then takes what is already there
        (at most ``prefetch``: the broker sends no more before acknowledgements)."""
        if self.connection is None:
            await self.setup()
        try:
            first = await asyncio.wait_for(self._buffer.get(), timeout=self.wait)
        except TimeoutError:
            return []
        msgs = [first]
        while not self._buffer.empty() and len(msgs) < self.address.prefetch:
            msgs.append(self._buffer.get_nowait())
        return msgs

    async def read_new(self) -> int:
        msgs = await self.fetch()
        if msgs:
            await self.handle(msgs)
        return len(msgs)

    async def handle(self, msgs: Sequence[AbstractIncomingMessage]) -> Handled:
        """Store the messages' items, dead-letter the bad ones, acknowledge the rest. On a database error the
        batch goes back to the queue (``nack(requeue=True)``) and the error is raised."""
        try:
            out = await self.ingestor.handle([(i, bytes(msg.body)) for i, msg in enumerate(msgs)])
        except Exception:
            for msg in msgs:
                with contextlib.suppress(Exception):  # a closed channel requeues them anyway
                    await msg.nack(requeue=True)
            raise
        for i, reason in out.dead:
            await self._dead_letter(msgs[i], reason)
        for i in out.done:
            await msgs[i].ack()
        self.totals.add(out.counts)
        return out.counts

    async def _dead_letter(self, msg: AbstractIncomingMessage, reason: str) -> None:
        a = self.address
        log.warning("queue %s: message %s dead-lettered: %s", a.queue, msg.delivery_tag, reason)
        assert self.channel is not None
        headers: dict[str, Any] = {**(msg.headers or {}), REASON_HEADER: reason, "labelagent-source-queue": a.queue}
        dead = aio_pika.Message(bytes(msg.body), headers=headers, content_type=msg.content_type,
                                message_id=msg.message_id, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
        await self.channel.default_exchange.publish(dead, routing_key=a.dead_letter)  # confirmed by the broker
        await msg.ack()
