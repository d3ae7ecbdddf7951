"""What every broker source shares: one message's fields -> (project, item, client label), a batch of messages
stored with ``store.items.ingest`` grouped by project, the dead-letter reasons, and the runtime's notification.

A message is one item with the fields ``project`` (the project's name; it must exist), ``external_id`` (the
client's id of the item: ingest is idempotent by it), ``data`` (a JSON object, or a string holding one, with
``text`` (string) and/or ``metadata`` (object), no other keys) and an optional ``label`` (a label the client
already knows, kept as the item's client label). Redis carries the fields as a stream entry's fields (``data``
then is JSON text); NATS and RabbitMQ carry them as the message body, one JSON object.

A broker source reads a batch, calls :meth:`BatchIngestor.handle`, and then acknowledges ``Outcome.done``,
publishes ``Outcome.dead`` (each with its reason) to its dead-letter destination and acknowledges them too.
``handle`` raises on database errors: nothing was decided then, and the source leaves the batch unacknowledged
(or gives it back) for a retry.
"""

from __future__ import annotations

import asyncio
import json
from collections import defaultdict
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar
from urllib.parse import parse_qs

from policies import InputError, NotFoundError
from service.api.schemas.common import MAX_LABEL_CHARS, metadata_safe, no_nul
from service.api.schemas.items import check_item_text
from service.runtime.feedback import FeedbackSink, NullSink
from service.store import SqlStore
from tools.base import Item

Ref = TypeVar("Ref", bound=Hashable)  # the broker's handle on one message (an entry id, a message object)
Body = Mapping[str, Any] | bytes | None  # the fields, a JSON body holding them, or None: nothing to store
Row = tuple[Any, Item, str | None]  # (ref, item, client label)


def parse_entry(fields: Mapping[str, Any], max_key_length: int,
                max_text_chars: int | None = None) -> tuple[str, Item, str | None]:
    """(project, item, client label) from one message's fields; InputError saying what is wrong otherwise.

    The checks are the HTTP ingest's: what passes here both databases store (no NUL characters, finite numbers,
    bounded lengths), so a bad message is dead-lettered instead of failing the batch's write on every retry."""
    project = fields.get("project")
    key = fields.get("external_id")
    if not project:
        raise InputError("missing field 'project'")
    if not isinstance(project, str):
        raise InputError("field 'project' must be a string")
    _check("project", project, no_nul)
    if not key:
        raise InputError("missing field 'external_id'")
    if not isinstance(key, str):
        raise InputError("field 'external_id' must be a string")
    if len(key) > max_key_length:
        raise InputError(f"external_id is longer than {max_key_length} characters")
    _check("external_id", key, no_nul)
    raw = fields.get("data")
    if raw is None:
        raise InputError("missing field 'data' (a JSON object with text and/or metadata)")
    if isinstance(raw, str | bytes):
        try:
            data = json.loads(raw)
        except ValueError as exc:
            raise InputError(f"field 'data' is not JSON: {exc}") from None
    else:
        data = raw
    if not isinstance(data, dict):
        raise InputError("field 'data' must be a JSON object")
    data = dict(data)
    text = data.pop("text", None)
    if text is not None and not isinstance(text, str):
        raise InputError("data.text must be a string")
    if text is not None:
        _check("data.text", text, no_nul)
        check_item_text(text, max_text_chars, "data.text")
    metadata = data.pop("metadata", {})
    if not isinstance(metadata, dict):
        raise InputError("data.metadata must be an object")
    _check("data.metadata", metadata, metadata_safe)
    if data:
        raise InputError(f"data has unknown key {sorted(data)[0]!r}; give text and/or metadata")
    if text is None and not metadata:
        raise InputError("data has neither text nor metadata")
    label = fields.get("label")
    if label is not None and not isinstance(label, str):
        raise InputError("field 'label' must be a string")
    if label:
        _check("label", label, no_nul)
        if len(label) > MAX_LABEL_CHARS:
            raise InputError(f"field 'label' is longer than {MAX_LABEL_CHARS} characters")
    return project, Item(key=key, text=text, metadata=metadata), label or None


def _check(name: str, value: Any, check: Callable[[Any], Any]) -> None:
    try:
        check(value)
    except ValueError as exc:
        raise InputError(f"{name} {exc}") from None


def decode_body(body: bytes) -> dict[str, Any]:
    """A message body: one JSON object with the fields; InputError otherwise."""
    try:
        fields = json.loads(body)
    except ValueError as exc:  # UnicodeDecodeError is a ValueError too
        raise InputError(f"the body is not JSON: {exc}") from None
    if not isinstance(fields, dict):
        raise InputError("the body must be a JSON object with project, external_id, data and optionally label")
    return fields


def header_safe(text: str, limit: int = 1000) -> str:
    """A reason fit for a message header: one line of printable ASCII (other characters escaped), bounded."""
    flat = " ".join(text.split())
    safe = flat.encode("ascii", "backslashreplace").decode("ascii")
    return safe if len(safe) <= limit else safe[:limit - 3] + "..."


@dataclass(slots=True)
class Handled:
    stored: int = 0
    duplicates: int = 0
    dead: int = 0

    def add(self, other: Handled) -> None:
        self.stored += other.stored
        self.duplicates += other.duplicates
        self.dead += other.dead


@dataclass(slots=True)
class Outcome(Generic[Ref]):
    """What to do with a batch's messages: acknowledge ``done``; dead-letter ``dead`` (with the reason), then
    acknowledge them."""

    done: list[Ref] = field(default_factory=list)
    dead: list[tuple[Ref, str]] = field(default_factory=list)
    counts: Handled = field(default_factory=Handled)


class BatchIngestor(Generic[Ref]):
    """Stores batches of messages into the store (idempotently) and tells the sink which projects got items."""

    def __init__(self, store: SqlStore, sink: FeedbackSink | None = None) -> None:
        self.store = store
        self.sink = sink or NullSink()

    async def handle(self, messages: Sequence[tuple[Ref, Body]]) -> Outcome[Ref]:
        """Decide every message: stored (or a duplicate: ``done``) or refused (``dead`` with why). Raises on
        database errors (nothing is decided then)."""
        out: Outcome[Ref] = Outcome()
        by_project: dict[str, list[Row]] = defaultdict(list)
        limit, max_text = self.store.settings.max_external_id_length, self.store.settings.max_text_chars
        for ref, body in messages:
            if body is None:  # e.g. deleted from the stream after delivery: nothing to store
                out.done.append(ref)
                continue
            try:
                fields = decode_body(body) if isinstance(body, bytes | bytearray) else body
                project, item, label = parse_entry(fields, limit, max_text)
            except InputError as exc:
                out.dead.append((ref, str(exc)))
                continue
            by_project[project].append((ref, item, label))
        for project, rows in by_project.items():
            stored, dups, bad = await asyncio.to_thread(self._ingest, project, rows)
            out.counts.stored += stored
            out.counts.duplicates += dups
            out.dead.extend(bad)
            bad_refs = {ref for ref, _ in bad}
            out.done.extend(ref for ref, _, _ in rows if ref not in bad_refs)
            if stored:
                self.sink.notify(project)
        out.counts.dead = len(out.dead)
        return out

    def _ingest(self, project: str, rows: list[Row]) -> tuple[int, int, list[tuple[Any, str]]]:
        """(stored, duplicates, [(ref, reason)] of messages refused). Raises on database errors."""
        step = self.store.settings.max_batch_items
        stored = dups = 0
        bad: list[tuple[Any, str]] = []
        for start in range(0, len(rows), step):
            part = rows[start:start + step]
            try:
                res = self._ingest_part(project, part)
                stored, dups = stored + res[0], dups + res[1]
            except NotFoundError as exc:
                bad.extend((ref, str(exc)) for ref, _, _ in part)
            except InputError:  # one bad message spoils the call: find it by storing them one by one
                for row in part:
                    try:
                        res = self._ingest_part(project, [row])
                        stored, dups = stored + res[0], dups + res[1]
                    except (InputError, NotFoundError) as exc:
                        bad.append((row[0], str(exc)))
        return stored, dups, bad

    def _ingest_part(self, project: str, rows: Sequence[Row]) -> tuple[int, int]:
        labels = [label for _, _, label in rows]
        result = self.store.items.ingest(project, [item for _, item, _ in rows],
                                   labels=labels if any(lab is not None for lab in labels) else None)
        return result.inserted, len(result.duplicates)


def query_options(url: str, query: str, known: set[str]) -> dict[str, str]:
    """A source URL's query string as {option: last value}; InputError naming an unknown option."""
    options = {k: v[-1] for k, v in parse_qs(query).items()}
    unknown = sorted(set(options) - known)
    if unknown:
        raise InputError(f"source {url!r}: unknown option {unknown[0]!r} (known: {', '.join(sorted(known))})")
    return options
