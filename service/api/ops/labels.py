"""Labels out: the paginated export (JSONL or CSV) and the server-sent event stream.

Both walk the labels table in id order. The export's cursor is opaque (it encodes the last label id). On
PostgreSQL concurrent transactions may commit label ids out of order: an id below the last one read can still
appear for a few moments. The event stream re-reads a trailing window of ids for that (see :class:`LabelFeed`); the
export does not, so a cursor walk while workers write may miss such a label: export a quiet project for an exact
copy, or follow the event stream for a live one. On SQLite commits follow id order and both are exact.

A corrected label (``POST .../items/{id}/correction``) is a new label row with a new, larger id that replaces the
item's old row, so a cursor or a ``Last-Event-ID`` taken before the correction delivers it as a new record, with
``replaces_label_id`` naming the superseded record; keep the record with the largest ``label_id`` per item.
"""

from __future__ import annotations

import base64
import binascii
import csv
import io
import math
import time
from collections import deque
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Literal

import anyio
from fastapi.sse import ServerSentEvent

from policies import InputError
from service.api.schemas.items import LabelRecord
from service.store import LabelRow, SqlStore
from service.store.repositories import ItemsRepository

ExportFormat = Literal["jsonl", "csv"]
MEDIA_TYPES: dict[str, str] = {"jsonl": "application/x-ndjson", "csv": "text/csv; charset=utf-8"}
CSV_COLUMNS = tuple(LabelRecord.model_fields)
_CURSOR_PREFIX = "labels:"
EVENT_PAGE = 500  # events read per poll
POLL_SECONDS = 0.5  # idle wait between polls of the event stream
EVENT_LAG_SECONDS = 5.0  # PostgreSQL: ids re-read for this long (label transactions are far shorter)


FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\n", "|")


def csv_cell(value: object) -> object:
    """A CSV cell that no spreadsheet runs as a formula: text starting with ``= + - @ | TAB CR LF`` gets a leading
    ``'`` (OWASP's advice); numbers stay numbers."""
    if value is None:
        return ""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def encode_cursor(after_id: int) -> str:
    return base64.urlsafe_b64encode(f"{_CURSOR_PREFIX}{after_id}".encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> int:
    """The label id a cursor stands for (0 without one); InputError for anything not made by :func:`encode_cursor`."""
    if not cursor:
        return 0
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        text = ""
    number = text.removeprefix(_CURSOR_PREFIX)
    if not text.startswith(_CURSOR_PREFIX) or not (number.isascii() and number.isdigit()) or len(number) > 18:
        raise InputError("cursor is not valid; pass the X-Next-Cursor value of the previous page, or omit it to "
                         "start from the first label")
    return int(number)


def record(row: LabelRow) -> LabelRecord:
    return LabelRecord(label_id=row.id, external_id=row.external_id, label=row.label, confidence=row.confidence,
                       source=row.source, policy_version=row.policy_version, threshold=row.threshold,  # type: ignore[arg-type]
                       created_at=row.created_at, replaces_label_id=row.replaces, snapshot_id=row.snapshot_id)


@dataclass(slots=True, frozen=True)
class ExportPage:
    body: str
    media_type: str
    next_cursor: str  # after this page's last label (the same cursor when the page is empty)
    has_more: bool  # more labels exist now beyond this page


def export_labels(*, store: SqlStore, project: str, fmt: ExportFormat, cursor: str | None, limit: int) -> ExportPage:
    after = decode_cursor(cursor)
    rows = store.items.label_rows(project, after_id=after, limit=limit + 1)
    has_more = len(rows) > limit
    rows = rows[:limit]
    records = [record(r) for r in rows]
    if fmt == "csv":
        buf = io.StringIO()
        writer = csv.writer(buf, lineterminator="\n")
        writer.writerow(CSV_COLUMNS)
        for rec in records:
            data = rec.model_dump(mode="json")
            writer.writerow([csv_cell(data[c]) for c in CSV_COLUMNS])
        body = buf.getvalue()
    else:
        body = "".join(rec.model_dump_json() + "\n" for rec in records)
    next_cursor = encode_cursor(rows[-1].id if rows else after)
    return ExportPage(body, MEDIA_TYPES[fmt], next_cursor, has_more)


class LabelFeed:
    """A project's labels in id order, each delivered once, including ids committed out of order.

    Ids above a *floor* are re-read each poll and the ones already delivered skipped; the floor moves to the
    largest id delivered ``lag_seconds`` ago (any label not visible by then was still being written and got a
    larger id than that). With ``lag_seconds`` 0 (SQLite: one writer at a time, commits in id order) the floor is
    simply the last id delivered.
    """

    def __init__(self, items: ItemsRepository, project: str, *, after_id: int = 0, lag_seconds: float = 0.0,
                 page: int = EVENT_PAGE, clock: Callable[[], float] = time.monotonic) -> None:
        self.items = items
        self.project = project
        self.lag = lag_seconds
        self.page = page
        self.clock = clock
        self.floor = after_id
        self.top = after_id
        self._seen: set[int] = set()
        self._marks: deque[tuple[float, int]] = deque()

    def poll(self) -> list[LabelRow]:
        now = self.clock()
        ids = self.items.label_ids_since(self.project, after_id=self.floor, limit=len(self._seen) + self.page)
        fresh = [i for i in ids if i not in self._seen][:self.page]
        rows = self.items.label_rows_by_id(self.project, fresh) if fresh else []
        if rows:
            self._seen.update(r.id for r in rows)
            self.top = max(self.top, rows[-1].id)
        self._marks.append((now, self.top))
        while len(self._marks) > 1 and self._marks[1][0] <= now - self.lag:
            self._marks.popleft()
        if self._marks[0][0] <= now - self.lag and self._marks[0][1] > self.floor:
            self.floor = self._marks[0][1]
            self._seen = {i for i in self._seen if i > self.floor}
        return rows


async def label_events(*, store: SqlStore, project: str, after_id: int, poll_seconds: float = POLL_SECONDS,
                       key_id: int | None = None, recheck_seconds: float = 5.0) -> AsyncIterator[ServerSentEvent]:
    """Server-sent events of the project's labels after ``after_id``, until the client goes away (the server
    cancels the stream then) or the API key ``key_id`` is revoked (checked every ``recheck_seconds``, and before
    the first event). Event id = label id, so ``Last-Event-ID`` resumes after it."""
    feed = LabelFeed(store.items, project, after_id=after_id, lag_seconds=0.0 if store.sqlite else EVENT_LAG_SECONDS)
    checked = -math.inf
    while True:
        if key_id is not None and time.monotonic() - checked >= recheck_seconds:
            if not await anyio.to_thread.run_sync(store.projects.key_is_live, key_id):
                return  # the key was revoked: the stream ends
            checked = time.monotonic()
        rows = await anyio.to_thread.run_sync(feed.poll)
        for row in rows:
            yield ServerSentEvent(data=record(row), id=str(row.id), event="label")
        if len(rows) < feed.page:
            await anyio.sleep(poll_seconds)
