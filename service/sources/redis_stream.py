"""Ingest items from a Redis stream with a consumer group: ``labelagent worker --source redis://HOST:PORT/STREAM``.

Message format: one stream entry is one item, with the fields

* ``project``: the project's name (it must exist);
* ``external_id``: the client's id of the item (ingest is idempotent by it);
* ``data``: a JSON object with the item, as in the HTTP API's ingest: ``text`` (string) and/or ``metadata``
  (object), no other keys;
* ``label`` (optional): a label the client already knows (kept as the item's client label).

Example: ``XADD items * project sms_spam external_id msg-1 data '{"text": "WIN a prize!"}'``.

Delivery is at least once and storage is idempotent, so every item is stored exactly once: entries are read with
``XREADGROUP``, stored with ``store.ingest`` (a replayed entry is reported as a duplicate), and acknowledged
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
import json
import logging
import os
import socket
from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

import redis.asyncio as aioredis
from redis.exceptions import ResponseError

from policies import InputError, NotFoundError
from service.feedback import FeedbackSink, NullSink
from service.store import SqlStore
from tools.base import Item

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
        query = {k: v[-1] for k, v in parse_qs(parts.query).items()}
        known = {"group", "consumer", "db", "dead", "count", "claim_idle_ms"}
        unknown = sorted(set(query) - known)
        if unknown:
            raise InputError(f"source {url!r}: unknown option {unknown[0]!r} (known: {', '.join(sorted(known))})")
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


def parse_entry(fields: dict[str, str], max_key_length: int) -> tuple[str, Item, str | None]:
    """(project, item, client label) from one entry's fields; InputError saying what is wrong otherwise."""
    project = fields.get("project")
    key = fields.get("external_id")
    if not project:
        raise InputError("missing field 'project'")
    if not key:
        raise InputError("missing field 'external_id'")
    if len(key) > max_key_length:
        raise InputError(f"external_id is longer than {max_key_length} characters")
    raw = fields.get("data")
    if raw is None:
        raise InputError("missing field 'data' (a JSON object with text and/or metadata)")
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise InputError(f"field 'data' is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise InputError("field 'data' must be a JSON object")
    text = data.pop("text", None)
    if text is not None and not isinstance(text, str):
        raise InputError("data.text must be a string")
    metadata = data.pop("metadata", {})
    if not isinstance(metadata, dict):
        raise InputError("data.metadata must be an object")
    if data:
        raise InputError(f"data has unknown key {sorted(data)[0]!r}; give text and/or metadata")
    if text is None and not metadata:
        raise InputError("data has neither text nor metadata")
    return project, Item(key=key, text=text, metadata=metadata), fields.get("label") or None


@dataclass(slots=True)
class Handled:
    stored: int = 0
    duplicates: int = 0
    dead: int = 0


class RedisStreamSource:
    """Consumes one stream into the store. ``run`` until ``stopping()`` is true; ``handle`` is one read's work."""

    def __init__(self, store: SqlStore, address: StreamAddress, *, client: aioredis.Redis | None = None,
                 sink: FeedbackSink | None = None, block_ms: int = 1000, claim_every_s: float | None = None) -> None:
        self.store = store
        self.address = address
        self.redis = client or address.client()
        self.sink = sink or NullSink()
        self.block_ms = block_ms
        self.claim_every_s = claim_every_s if claim_every_s is not None else max(address.claim_idle_ms / 2000, 0.05)
        self.totals = Handled()

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
        out = Handled()
        fields_by_id = {entry_id: dict(fields or {}) for entry_id, fields in entries}
        by_project: dict[str, list[tuple[str, Item, str | None]]] = defaultdict(list)
        dead: list[tuple[str, dict[str, str], str]] = []
        done: list[str] = []
        limit = self.store.settings.max_external_id_length
        for entry_id, fields in entries:
            if not fields:  # deleted from the stream after delivery: nothing to store
                done.append(entry_id)
                continue
            try:
                project, item, label = parse_entry(dict(fields), limit)
            except InputError as exc:
                dead.append((entry_id, fields, str(exc)))
                continue
            by_project[project].append((entry_id, item, label))
        for project, rows in by_project.items():
            stored, dups, bad = await asyncio.to_thread(self._ingest, project, rows)
            out.stored += stored
            out.duplicates += dups
            dead.extend((entry_id, fields_by_id[entry_id], reason) for entry_id, reason in bad)
            bad_ids = {entry_id for entry_id, _ in bad}
            done.extend(entry_id for entry_id, _, _ in rows if entry_id not in bad_ids)
            if stored:
                self.sink.notify(project)
        await self._ack(done, dead)
        out.dead = len(dead)
        self.totals.stored += out.stored
        self.totals.duplicates += out.duplicates
        self.totals.dead += out.dead
        return out

    def _ingest(self, project: str, rows: list[tuple[str, Item, str | None]]) -> tuple[int, int, list[tuple[str, str]]]:
        """(stored, duplicates, [(entry id, reason)] of entries refused). Raises on database errors."""
        step = self.store.settings.max_batch_items
        stored = dups = 0
        bad: list[tuple[str, str]] = []
        for start in range(0, len(rows), step):
            part = rows[start:start + step]
            try:
                res = self._ingest_part(project, part)
                stored, dups = stored + res[0], dups + res[1]
            except NotFoundError as exc:
                bad.extend((entry_id, str(exc)) for entry_id, _, _ in part)
            except InputError:  # one bad entry spoils the call: find it by storing them one by one
                for row in part:
                    try:
                        res = self._ingest_part(project, [row])
                        stored, dups = stored + res[0], dups + res[1]
                    except (InputError, NotFoundError) as exc:
                        bad.append((row[0], str(exc)))
        return stored, dups, bad

    def _ingest_part(self, project: str, rows: Sequence[tuple[str, Item, str | None]]) -> tuple[int, int]:
        labels = [label for _, _, label in rows]
        result = self.store.ingest(project, [item for _, item, _ in rows],
                                   labels=labels if any(lab is not None for lab in labels) else None)
        return result.inserted, len(result.duplicates)

    async def _ack(self, done: list[str], dead: list[tuple[str, dict[str, str], str]]) -> None:
        a = self.address
        if not done and not dead:
            return
        async with self.redis.pipeline(transaction=True) as pipe:
            for entry_id, fields, reason in dead:
                log.warning("stream %s: entry %s dead-lettered: %s", a.stream, entry_id, reason)
                pipe.xadd(a.dead_letter, {**fields, "reason": reason, "source_id": entry_id,
                                          "source_stream": a.stream, "consumer": a.consumer})
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
