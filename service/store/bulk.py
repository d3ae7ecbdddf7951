"""Fast bulk inserts for the hot tables, below the ORM and below SQLAlchemy's per-row parameter handling.

Callers pass rows as tuples of driver-ready values: JSON already serialised with :func:`json_text`
(text is valid input for SQLite's JSON and for PostgreSQL's JSONB alike) and repeated values such as a
batch's timestamp converted once with :func:`db_value`. The rows go to the driver in one call:
``executemany`` on SQLite, ``COPY ... FROM STDIN`` on PostgreSQL (a pipelined executemany there costs the
server a parse/bind/execute per row). Per-row work in Python is one tuple. Speeds: see
``tests/service/test_store_speed.py``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from functools import lru_cache
from typing import Any

from sqlalchemy import Column, Connection, Dialect, Table
from sqlalchemy.exc import IntegrityError

from policies import InputError

_encoder = json.JSONEncoder(separators=(",", ":"), allow_nan=False, ensure_ascii=False)


def _c_encode() -> Callable[[Any], str] | None:
    """``_encoder.encode`` without building a new C encoder per call (``JSONEncoder.encode`` does: 40% of the cost of
    a vote's distribution); None where the C accelerator is missing. No circular-reference bookkeeping (``markers``
    None): a shared one would be wrong across threads, and values stored here are trees (a cycle fails in recursion)."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return None
    encode = make(None, _encoder.default, json.encoder.encode_basestring, None, ":", ",", False, False, False)

    def run(value: Any) -> str:
        return "".join(encode(value, 0))
    return run


_encode: Callable[[Any], str] = _c_encode() or _encoder.encode


def json_text(value: Any) -> str | None:
    """``value`` as JSON text for a JSON column; None stays SQL NULL. NaN/inf are refused (not JSON)."""
    if value is None:
        return None
    try:
        return _encode(value)
    except (TypeError, ValueError, RecursionError) as exc:
        raise InputError(f"cannot store {type(value).__name__} value as JSON: {exc}") from None


def db_value(conn: Connection, column: Column[Any], value: Any) -> Any:
    """One value through ``column``'s bind processor (use it once per batch for shared timestamps)."""
    proc = column.type._cached_bind_processor(conn.dialect)
    return value if proc is None else proc(value)


@lru_cache(maxsize=256)
def _statement(dialect: Dialect, table: Table, cols: tuple[str, ...]) -> str:
    for col in cols:
        _ = table.c[col]  # KeyError for a misspelt column, before the driver sees it
    quote = dialect.identifier_preparer.quote
    names = ", ".join(quote(c) for c in cols)
    if dialect.name == "postgresql":
        return f"COPY {quote(table.name)} ({names}) FROM STDIN"
    return f"INSERT INTO {quote(table.name)} ({names}) VALUES ({', '.join('?' * len(cols))})"


def bulk_insert(conn: Connection, table: Table, cols: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """Insert ``rows`` (tuples aligned with ``cols``) into ``table`` within ``conn``'s transaction.
    Constraint violations raise SQLAlchemy's ``IntegrityError`` on both backends."""
    if not rows:
        return
    sql = _statement(conn.dialect, table, tuple(cols))
    if conn.dialect.name != "postgresql":
        conn.exec_driver_sql(sql, list(rows))
        return
    driver = conn.connection.driver_connection
    try:
        with driver.cursor() as cur, cur.copy(sql) as copy:  # type: ignore[union-attr]
            for row in rows:
                copy.write_row(row)
    except conn.dialect.loaded_dbapi.IntegrityError as exc:
        raise IntegrityError(sql, None, exc) from exc
