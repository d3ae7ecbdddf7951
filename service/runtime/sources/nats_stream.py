"""Ingest items from a NATS JetStream stream with a durable pull consumer:
``labelagent worker --source nats://HOST:PORT/STREAM``.

Message format: one message is one item; its body is a JSON object with the fields ``project``, ``external_id``,
``data`` (an object with ``text`` and/or ``metadata``; a string holding that JSON works too) and optionally
``label`` (see service/runtime/sources/common.py). Example (Python, nats-py)::

    await js.publish("items", json.dumps({"project": "sms_spam", "external_id": "msg-1",
                                          "data": {"text": "WIN a prize!"}}).encode())

Delivery is at least once and storage is idempotent, so every item is stored exactly once: messages are fetched
in batches by the durable consumer ``durable`` (shared by every worker: each message goes to one of them), stored
with ``store.items.ingest`` (a redelivered message is reported as a duplicate) and acknowledged only after the items are
committed. A consumer that dies before acknowledging leaves its messages unacknowledged: JetStream redelivers
them after ``ack_wait`` seconds. A malformed message (or one naming an unknown project or label) is published to
the dead-letter subject (``STREAM.dead`` by default) with its body unchanged and the headers
``Labelagent-Reason``, ``Labelagent-Source-Subject`` and ``Labelagent-Source-Sequence``, then terminated (never
redelivered); it never stops the consumer. On a database error the batch is negatively acknowledged with a
delay and comes back later.

When the stream does not exist it is created (file storage) over the subject and the dead-letter subject; when
it exists and no stream captures the dead-letter subject, a stream ``STREAM_dead`` is created for it. The
durable consumer is created, or updated to these settings (explicit acks, every message of the subject).

URL options (query string): ``subject`` (the subject consumed; default: the stream's name), ``durable`` (the
consumer's name, default ``labelagent``), ``dead`` (the dead-letter subject), ``batch`` (messages per fetch,
default 500), ``ack_wait`` (seconds before an unacknowledged message is redelivered, default 60),
``max_deliver`` (deliveries of a message before JetStream gives it up; default -1: never, so a database outage
loses nothing). ``tls://`` uses TLS; ``nats://user:password@host`` authenticates.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote, urlsplit

import nats
import nats.errors
import nats.js.errors
from nats.aio.client import Client as NatsClient
from nats.aio.msg import Msg
from nats.js.api import AckPolicy, ConsumerConfig, DeliverPolicy, StorageType, StreamConfig

from policies import InputError
from service.runtime.feedback import FeedbackSink
from service.runtime.sources.common import BatchIngestor, Handled, header_safe, query_options
from service.store import SqlStore

log = logging.getLogger("labelagent.sources.nats")

REASON_HEADER = "Labelagent-Reason"
_BAD_NAME = set(" \t\r\n.*>/\\")


@dataclass(frozen=True, slots=True)
class NatsAddress:
    """Where to consume: the server, the stream, the subject, the durable consumer and the dead-letter subject."""

    server: str  # nats://host:port or tls://host:port
    stream: str
    subject: str
    durable: str = "labelagent"
    dead_letter: str = ""
    batch: int = 500
    ack_wait: float = 60.0
    max_deliver: int = -1
    user: str | None = None
    password: str | None = None

    @classmethod
    def parse(cls, url: str) -> NatsAddress:
        parts = urlsplit(url)
        if parts.scheme not in ("nats", "tls"):
            raise InputError(f"source {url!r}: use nats://HOST:PORT/STREAM (or tls:// for TLS)")
        stream = unquote(parts.path.lstrip("/"))
        if not stream:
            raise InputError(f"source {url!r}: name the stream, e.g. nats://127.0.0.1:4222/items")
        if _BAD_NAME & set(stream):
            raise InputError(f"source {url!r}: a stream name has no spaces, '.', '*', '>', '/' or '\\'")
        query = query_options(url, parts.query, {"subject", "durable", "dead", "batch", "ack_wait", "max_deliver"})
        durable = query.get("durable") or "labelagent"
        if _BAD_NAME & set(durable):
            raise InputError(f"source {url!r}: a durable name has no spaces, '.', '*', '>', '/' or '\\'")
        subject = query.get("subject") or stream
        dead = query.get("dead") or f"{stream}.dead"
        if dead == subject:
            raise InputError(f"source {url!r}: the dead-letter subject must differ from the subject consumed")
        try:
            address = cls(server=f"{parts.scheme}://{parts.hostname or '127.0.0.1'}:{parts.port or 4222}",
                          stream=stream, subject=subject, durable=durable, dead_letter=dead,
                          batch=int(query.get("batch", 500)), ack_wait=float(query.get("ack_wait", 60)),
                          max_deliver=int(query.get("max_deliver", -1)),
                          user=unquote(parts.username) if parts.username else None,
                          password=unquote(parts.password) if parts.password else None)
        except ValueError as exc:
            raise InputError(f"source {url!r}: {exc}") from None
        if address.batch < 1 or address.ack_wait <= 0 or address.max_deliver == 0 or address.max_deliver < -1:
            raise InputError(f"source {url!r}: batch >= 1, ack_wait > 0 and max_deliver -1 (no limit) or >= 1")
        return address

    def consumer_config(self) -> ConsumerConfig:
        return ConsumerConfig(durable_name=self.durable, name=self.durable, ack_policy=AckPolicy.EXPLICIT,
                              deliver_policy=DeliverPolicy.ALL, filter_subject=self.subject,
                              ack_wait=self.ack_wait, max_deliver=self.max_deliver,
                              max_ack_pending=max(self.batch * 4, 1000))

    async def connect(self) -> NatsClient:
        return await nats.connect(self.server, user=self.user, password=self.password, connect_timeout=5,
                                  max_reconnect_attempts=-1, allow_reconnect=True)


class NatsStreamSource:
    """Consumes one subject of a stream into the store. ``run`` until ``stopping()``; ``handle`` is one fetch's
    work."""

    def __init__(self, store: SqlStore, address: NatsAddress, *, sink: FeedbackSink | None = None,
                 fetch_timeout: float = 1.0) -> None:
        self.store = store
        self.address = address
        self.ingestor: BatchIngestor[int] = BatchIngestor(store, sink)
        self.fetch_timeout = fetch_timeout
        self.totals = Handled()
        self.nc: NatsClient | None = None
        self._sub: Any = None

    async def setup(self) -> None:
        """Connect, make sure the stream (over the subject and the dead-letter subject) and the durable consumer
        exist, and bind a pull subscription to the consumer."""
        a = self.address
        if self.nc is None or self.nc.is_closed:
            self.nc = await a.connect()
        jsm = self.nc.jetstream()
        try:
            await jsm.stream_info(a.stream)
        except nats.js.errors.NotFoundError:
            await jsm.add_stream(StreamConfig(name=a.stream, subjects=[a.subject, a.dead_letter],
                                              storage=StorageType.FILE))
            log.info("created stream %s over %s and %s", a.stream, a.subject, a.dead_letter)
        try:
            await jsm.find_stream_name_by_subject(a.dead_letter)
        except nats.js.errors.NotFoundError:
            await jsm.add_stream(StreamConfig(name=f"{a.stream}_dead", subjects=[a.dead_letter],
                                              storage=StorageType.FILE))
            log.info("created stream %s_dead over %s", a.stream, a.dead_letter)
        await jsm.add_consumer(a.stream, config=a.consumer_config())  # creates it, or updates its settings
        if self._sub is not None:
            with contextlib.suppress(Exception):  # the previous subscription, maybe of a lost connection
                await self._sub.unsubscribe()
        self._sub = await jsm.pull_subscribe_bind(durable=a.durable, stream=a.stream)

    async def close(self) -> None:
        if self.nc is not None and not self.nc.is_closed:
            await self.nc.flush()  # the last acknowledgements are on their way
            await self.nc.close()

    async def run(self, stopping: Callable[[], bool]) -> None:
        """Fetch, store and acknowledge until ``stopping()``; errors are logged and retried, never raised."""
        a = self.address
        log.info("consuming %s stream %s subject %s (durable %s)", a.server, a.stream, a.subject, a.durable)
        ready, backoff = False, 0.5
        while not stopping():
            try:
                if not ready:
                    await self.setup()
                    ready = True
                await self.read_new(on_error_delay=backoff)
                backoff = 0.5
            except Exception:
                log.exception("stream %s: consuming failed; retrying in %.1fs", a.stream, backoff)
                ready = False
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)

    async def fetch(self) -> list[Msg]:
        """One batch of messages (empty when none arrived within ``fetch_timeout``)."""
        if self._sub is None:
            await self.setup()
        try:
            return list(await self._sub.fetch(self.address.batch, timeout=self.fetch_timeout))
        except nats.errors.TimeoutError:
            return []

    async def read_new(self, on_error_delay: float = 0.5) -> int:
        msgs = await self.fetch()
        if msgs:
            await self.handle(msgs, on_error_delay=on_error_delay)
        return len(msgs)

    async def handle(self, msgs: Sequence[Msg], *, on_error_delay: float = 0.5) -> Handled:
        """Store the messages' items, dead-letter the bad ones, acknowledge the rest. On a database error the
        batch is given back (``nak`` with a delay) and the error raised."""
        try:
            out = await self.ingestor.handle([(i, bytes(msg.data)) for i, msg in enumerate(msgs)])
        except Exception:
            await asyncio.gather(*(msg.nak(delay=on_error_delay) for msg in msgs), return_exceptions=True)
            raise
        for i, reason in out.dead:
            await self._dead_letter(msgs[i], reason)
        for i in out.done:
            await msgs[i].ack()
        if self.nc is not None:
            await self.nc.flush()
        self.totals.add(out.counts)
        return out.counts

    async def _dead_letter(self, msg: Msg, reason: str) -> None:
        a = self.address
        seq = msg.metadata.sequence.stream
        log.warning("stream %s: message %s dead-lettered: %s", a.stream, seq, reason)
        assert self.nc is not None
        headers = {REASON_HEADER: header_safe(reason), "Labelagent-Source-Subject": msg.subject,
                   "Labelagent-Source-Sequence": str(seq),
                   "Nats-Msg-Id": f"labelagent-dead:{a.stream}:{seq}"}  # a redelivery is not dead-lettered twice
        await self.nc.jetstream().publish(a.dead_letter, bytes(msg.data), headers=headers)
        await msg.term()
