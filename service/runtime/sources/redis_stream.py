"""Ingest items from a Redis stream with a consumer group: ``labelagent worker --source redis://HOST:PORT/STREAM``.

Message format: one stream entry is one item, with the fields

* ``project``: the project's name (it must exist);
* ``external_id``: the client's id of the item (ingest is idempotent by it);
* ``data``: a JSON object with the item, as in the HTTP API's ingest: ``text`` (string) and/or ``metadata``
  (object), no other keys;
* ``label`` (optional): a label the client already knows (kept as the item's client label).

Example: ``XADD items * project sms_spam external_id msg-1 data '{"text": "WIN a prize!"}'``.

Delivery is at least once and storage is idempotent, so every item is stored exactly once: entries are read with
``XREADGROUP``, stored with ``store.items.ingest`` (a replayed entry is reported as a duplicate), and acknowledged
(``XACK``) only after the items are committed. A consumer that dies before acknowledging leaves its entries
pending; any live consumer takes them over with ``XAUTOCLAIM`` once they have been idle ``claim_idle_ms``, and a
consumer restarted under the same name first re-reads its own pending entries. A malformed entry (or one naming
an unknown project or label) is copied to the dead-letter stream (``STREAM:dead`` by default) with a ``reason``
field, acknowledged, and never stops the consumer. Database errors leave the entries pending for a retry.

URL options (query string): ``group`` (default ``labelagent``), ``consumer`` (default ``HOST-PID``), ``db``
(default 0), ``dead`` (the dead-letter stream), ``count`` (entries per read, default 500), ``claim_idle_ms``
(default 60000). ``rediss://`` uses TLS; ``redis://user:password@host`` authenticates.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote, urlsplit

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from policies import InputError
from service.runtime.feedback import FeedbackSink
from service.runtime.sources.common import BatchIngestor, Handled, query_options
from service.runtime.sources.common import parse_entry as parse_entry  # re-exported: the entry format is shared
from service.store import SqlStore

log = logging.getLogger("labelagent.sources.redis")

Entry = tuple[str, dict[str, str]]


@dataclass(frozen=True, slots=True)
class StreamAddress:
    """Where to consume: the server, the stream, the group and this consumer's name."""

    host: str
    port: int
    stream: str
    group: str = "labelagent"
    consumer: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    db: int = 0
    username: str | None = None
    password: str | None = None
    ssl: bool = False
    dead_letter: str = ""
    count: int = 500
    claim_idle_ms: int = 60_000

    @classmethod
    def parse(cls, url: str) -> StreamAddress:
        parts = urlsplit(url)
        if parts.scheme not in ("redis", "rediss"):
            raise InputError(f"source {url!r}: use redis://HOST:PORT/STREAM (or rediss:// for TLS)")
        stream = unquote(parts.path.lstrip("/"))
        if not stream:
            raise InputError(f"source {url!r}: name the stream, e.g. redis://127.0.0.1:6379/items")
        query = query_options(url, parts.query, {"group", "consumer", "db", "dead", "count", "claim_idle_ms"})
        try:
            extra: dict[str, Any] = {k: v for k, v in (("group", query.get("group")),
                                                       ("consumer", query.get("consumer"))) if v}
            return cls(host=parts.hostname or "127.0.0.1", port=parts.port or 6379, stream=stream,
                       db=int(query.get("db", 0)), username=unquote(parts.username) if parts.username else None,
                       password=unquote(parts.password) if parts.password else None, ssl=parts.scheme == "rediss",
                       dead_letter=query.get("dead") or f"{stream}:dead", count=int(query.get("count", 500)),
                       claim_idle_ms=int(query.get("claim_idle_ms", 60_000)), **extra)
        except ValueError as exc:
            raise InputError(f"source {url!r}: {exc}") from None

    def client(self) -> aioredis.Redis:
        return aioredis.Redis(host=self.host, port=self.port, db=self.db, username=self.username,
                              password=self.password, ssl=self.ssl, decode_responses=True)


class RedisStreamSource:
    """Consumes one stream into the store. ``run`` until ``stopping()`` is true; ``handle`` is one read's work."""

    def __init__(self, store: SqlStore, address: StreamAddress, *, client: aioredis.Redis | None = None,
                 sink: FeedbackSink | None = None, block_ms: int = 1000, claim_every_s: float | None = None) -> None:
        self.store = store
        self.address = address
        self.redis = client or address.client()
        self.ingestor: BatchIngestor[str] = BatchIngestor(store, sink)
        self.block_ms = block_ms
        self.claim_every_s = claim_every_s if claim_every_s is not None else max(address.claim_idle_ms / 2000, 0.05)
        self.totals = Handled()

    async def close(self) -> None:
        await self.redis.aclose()

    async def ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(self.address.stream, self.address.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def run(self, stopping: Callable[[], bool]) -> None:
        """Read, store and acknowledge until ``stopping()``; errors are logged and retried, never raised."""
        a = self.address
        log.info("consuming %s/%s as %s (group %s)", a.host, a.stream, a.consumer, a.group)
        recover, next_claim, backoff = True, 0.0, 0.5
        loop = asyncio.get_running_loop()
        while not stopping():
            try:
                if recover:
                    await self.ensure_group()
                    await self.recover_own()
                    recover = False
                if loop.time() >= next_claim:
                    await self.reclaim()
                    next_claim = loop.time() + self.claim_every_s
                await self.read_new()
                backoff = 0.5
            except Exception:
                log.exception("stream %s: consuming failed; retrying in %.1fs", a.stream, backoff)
                recover = True  # entries read but not acknowledged are pending for us: read them again
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 30.0)

    async def recover_own(self) -> int:
        """Re-read and handle entries delivered to this consumer but never acknowledged (a restart)."""
        a, n = self.address, 0
        while True:
            entries = _entries(await self.redis.xreadgroup(a.group, a.consumer, {a.stream: "0"}, count=a.count))
            if not entries:
                return n
            await self.handle(entries)
            n += len(entries)

    async def reclaim(self) -> int:
        """Take over entries that other (dead) consumers left pending longer than ``claim_idle_ms``."""
        a, n, cursor = self.address, 0, "0-0"
        while True:
            reply = await self.redis.xautoclaim(a.stream, a.group, a.consumer, a.claim_idle_ms, cursor, count=a.count)
            cursor, entries = reply[0], reply[1]
            if entries:
                log.info("stream %s: reclaimed %d stale entries", a.stream, len(entries))
                await self.handle(entries)
                n += len(entries)
            if cursor in ("0-0", b"0-0"):
                return n

    async def read_new(self) -> int:
        a = self.address
        reply = await self.redis.xreadgroup(a.group, a.consumer, {a.stream: ">"}, count=a.count, block=self.block_ms)
        entries = _entries(reply)
        if entries:
            await self.handle(entries)
        return len(entries)

    async def handle(self, entries: Sequence[tuple[str, dict[str, str] | None]]) -> Handled:
        """Store the entries' items, dead-letter the bad ones, then acknowledge them all."""
        fields_by_id = {entry_id: dict(fields or {}) for entry_id, fields in entries}
        out = await self.ingestor.handle([(entry_id, fields or None) for entry_id, fields in entries])
        await self._ack(out.done, [(entry_id, fields_by_id[entry_id], reason) for entry_id, reason in out.dead])
        self.totals.add(out.counts)
        return out.counts

    async def _ack(self, done: list[str], dead: list[tuple[str, dict[str, str], str]]) -> None:
        a = self.address
        if not done and not dead:
            return
        async with self.redis.pipeline(transaction=True) as pipe:
            for entry_id, fields, reason in dead:
                log.warning("stream %s: entry %s dead-lettered: %s", a.stream, entry_id, reason)
                entry: dict[Any, Any] = {**fields, "reason": reason, "source_id": entry_id,
                                         "source_stream": a.stream, "consumer": a.consumer}
                pipe.xadd(a.dead_letter, entry)
            ids = done + [entry_id for entry_id, _, _ in dead]
            pipe.xack(a.stream, a.group, *ids)
            await pipe.execute()


def _entries(reply: Any) -> list[tuple[str, dict[str, str] | None]]:
    """The entries of an XREADGROUP reply over one stream: ``[[stream, entries]]`` (RESP2) or
    ``{stream: entries}`` (RESP3)."""
    if not reply:
        return []
    groups = reply.values() if isinstance(reply, dict) else (entries for _, entries in reply)
    return [(entry_id, fields) for entries in groups for entry_id, fields in entries]
