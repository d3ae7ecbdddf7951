"""How ``ingest`` writes new item rows on each backend: SQLite through the driver's ``executemany`` (items with
images through SQLAlchemy, for their ids), PostgreSQL as arrays through ``unnest`` in one fixed statement."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import Connection, Row, select
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from service.store.base import chunks, item_t
from service.store.bulk import db_value, json_text
from tools.base import Item as ToolItem


def insert_with_images(conn: Connection, pid: int, fresh: list[tuple[ToolItem, str | None]], first: int,
                       now: datetime) -> dict[str, int]:
    """SQLite, items with images: insert ``fresh`` (item, client label) as pending items from seq ``first``:
    external id -> item id of those inserted (a key another writer stored first is skipped)."""
    data = [{"project_id": pid, "external_id": it.key, "text": it.text, "meta": it.metadata or {},
             "client_label": lab, "status": "pending", "attempts": 0, "seq": first + n,
             "created_at": now, "updated_at": now} for n, (it, lab) in enumerate(fresh)]
    insert_ = sqlite_insert(item_t)
    stmt = insert_.on_conflict_do_nothing(index_elements=["project_id", "external_id"])
    inserted: dict[str, int] = {}
    for part in chunks(data):
        rows: Sequence[Row[int, str]] = conn.execute(
            stmt.returning(item_t.c.id, item_t.c.external_id), list(part)).all()
        inserted.update((key, id_) for id_, key in rows)
    return inserted


_ITEM_COLS = ("project_id", "external_id", "text", "meta", "client_label", "status", "attempts", "seq",
              "created_at", "updated_at")


# One statement for any number of items: the rows travel as five arrays, so its text is fixed (psycopg parses it
# once and caches it) and the client does no per-row parameter work. SQLAlchemy's multi-row VALUES form cost about
# 0.13 ms of client CPU per item, most of it psycopg parsing a new 2,560-placeholder query for every chunk.
_PG_INSERT = (
    f"INSERT INTO item ({', '.join(_ITEM_COLS)}) SELECT %(pid)s, u.k, u.t, u.m::jsonb, u.l, 'pending', 0, u.s, "
    "%(ts)s, %(ts)s "
    "FROM unnest(%(keys)s::text[], %(texts)s::text[], %(metas)s::text[], %(labels)s::text[], %(seqs)s::bigint[]) "
    "WITH ORDINALITY AS u(k, t, m, l, s, n) ORDER BY u.n "
    "ON CONFLICT (project_id, external_id) DO NOTHING RETURNING id, external_id")


def insert_pg(conn: Connection, pid: int, fresh: list[tuple[ToolItem, str | None]], first: int,
              now: datetime) -> dict[str, int]:
    """PostgreSQL: insert ``fresh`` as pending items from seq ``first``, in order (ids follow the input); external id
    -> item id of those inserted (a key another writer stored first is skipped)."""
    params = {"pid": pid, "ts": db_value(conn, item_t.c.created_at, now),
              "keys": [it.key for it, _ in fresh], "texts": [it.text for it, _ in fresh],
              "metas": [json_text(it.metadata or {}) for it, _ in fresh], "labels": [lab for _, lab in fresh],
              "seqs": list(range(first, first + len(fresh)))}
    rows: Sequence[Row[int, str]] = conn.exec_driver_sql(_PG_INSERT, params).all()
    return {key: id_ for id_, key in rows}


def insert_sqlite(conn: Connection, pid: int, fresh: list[tuple[ToolItem, str | None]], first: int,
                  now: datetime) -> set[str]:
    """Insert ``fresh`` with seqs from ``first`` in one driver ``executemany``; returns the keys inserted.

    The same rows as the SQLAlchemy insert (the JSON column through its own bind processor, the shared
    timestamp converted once) without SQLAlchemy's per-row parameter handling and RETURNING; items without images
    only (an image row needs its item's id). The write lock
    is held, so normally every row goes in; if a writer that bypasses ``ingest`` stored some keys meanwhile
    (ON CONFLICT DO NOTHING skips them), the keys inserted are read back by their seqs.
    """
    to_json = item_t.c.meta.type._cached_bind_processor(conn.dialect)
    ts = db_value(conn, item_t.c.created_at, now)
    rows = [(pid, it.key, it.text, to_json(it.metadata or {}) if to_json else it.metadata or {}, lab,
             "pending", 0, first + n, ts, ts) for n, (it, lab) in enumerate(fresh)]
    sql = (f"INSERT INTO item ({', '.join(_ITEM_COLS)}) VALUES ({', '.join('?' * len(_ITEM_COLS))}) "
           "ON CONFLICT (project_id, external_id) DO NOTHING")
    count = conn.exec_driver_sql(sql, rows).rowcount
    if count == len(rows):
        return {it.key for it, _ in fresh}
    return set(conn.execute(select(item_t.c.external_id).where(
        item_t.c.project_id == pid, item_t.c.seq.between(first, first + len(fresh) - 1))).scalars())
