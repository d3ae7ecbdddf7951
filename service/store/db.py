"""Engines and transactions for SQLite (WAL, the default) and PostgreSQL (psycopg 3).

Writes go through :func:`write_tx`: on SQLite it opens the transaction with ``BEGIN IMMEDIATE``,
which takes the database's single write lock up front, so two writers queue on ``busy_timeout``
instead of failing with ``SQLITE_BUSY`` when a read transaction tries to become a write one.
Reads use :func:`read_tx` (a plain deferred ``BEGIN``), so readers never wait for the writer.
Within one process, SQLite writers also queue on a lock of the engine before ``BEGIN IMMEDIATE``: SQLite's busy
handler waits by sleeping (1, 2, 5, 10 ... 100 ms between tries), so a writer that found the lock taken could sleep
long after it was free; a thread waiting on the lock wakes as soon as it is released.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import Any, TypeVar
from weakref import WeakKeyDictionary

from sqlalchemy import Connection, Engine, create_engine, event, text
from sqlalchemy import exc as sa_exc
from sqlalchemy.engine import make_url
from sqlalchemy.pool import StaticPool
from sqlmodel import Session, SQLModel

from service.settings import Settings, get_settings

_BEGIN_OPTION = "labelagent_sqlite_begin"
# SQLite engines' writer queues: (lock, longest wait in seconds: the busy timeout)
_WRITE_LOCKS: WeakKeyDictionary[Engine, tuple[threading.RLock, float]] = WeakKeyDictionary()
T = TypeVar("T")
log = logging.getLogger("labelagent.db")


def is_sqlite(engine: Engine | Connection) -> bool:
    return engine.dialect.name == "sqlite"


def make_engine(
    url: str,
    *,
    echo: bool = False,
    busy_timeout_ms: int = 10_000,
    pool_size: int = 5,
    max_overflow: int = 10,
) -> Engine:
    """An engine for ``url``: SQLite tuned for one writer and many readers, or PostgreSQL via psycopg 3."""
    parsed = make_url(url)
    backend = parsed.get_backend_name()
    if backend == "sqlite":
        return _sqlite_engine(url, echo=echo, busy_timeout_ms=busy_timeout_ms)
    if backend == "postgresql":
        if parsed.drivername in {"postgresql", "postgres"}:
            parsed = parsed.set(drivername="postgresql+psycopg")
        engine = create_engine(
            parsed, echo=echo, pool_pre_ping=True, pool_size=pool_size, max_overflow=max_overflow,
        )

        @event.listens_for(engine, "connect")
        def _on_pg_connect(dbapi_conn: Any, _record: Any) -> None:
            # psycopg prepares a statement after 5 runs and PostgreSQL then may switch it to a generic plan,
            # which for ``project_id = $1 AND external_id IN ($2..$257)`` scans the whole project (measured:
            # 4 ms -> 50 ms per batch). Custom plans cost a little planning and stay right.
            autocommit = dbapi_conn.autocommit
            dbapi_conn.autocommit = True
            dbapi_conn.execute("SET plan_cache_mode = force_custom_plan")
            dbapi_conn.autocommit = autocommit

        return engine
    raise ValueError(f"unsupported database URL {parsed.render_as_string(hide_password=True)!r}; "
                     "use sqlite:///path.db or postgresql+psycopg://...")


def engine_from_settings(settings: Settings | None = None) -> Engine:
    """The engine described by the settings (``LABELAGENT_DATABASE_URL`` and friends)."""
    s = settings or get_settings()
    return make_engine(s.database_url, echo=s.echo_sql, busy_timeout_ms=s.sqlite_busy_timeout_ms,
                       pool_size=s.pool_size, max_overflow=s.max_overflow)


def _sqlite_engine(url: str, *, echo: bool, busy_timeout_ms: int) -> Engine:
    parsed = make_url(url)
    memory = parsed.database in (None, "", ":memory:")
    kwargs: dict[str, Any] = {"connect_args": {"check_same_thread": False}}
    if memory:
        kwargs["poolclass"] = StaticPool  # one shared connection: only for tests and single-threaded use
    engine = create_engine(url, echo=echo, **kwargs)
    _WRITE_LOCKS[engine] = (threading.RLock(), busy_timeout_ms / 1000)

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None  # the driver stays out of transactions; "begin" below runs them
        cur = dbapi_conn.cursor()
        if not memory:
            cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        mode = conn.get_execution_options().get(_BEGIN_OPTION, "DEFERRED")
        conn.exec_driver_sql(f"BEGIN {mode}")

    return engine


def database_advice(engine: Engine) -> list[str]:
    """What an operator should change in the database's settings, one sentence each (none for SQLite).

    PostgreSQL's autovacuum: every item row is updated two or three times (claimed, decided), so a queue of a
    few hundred thousand items leaves as many dead row versions, and claims and counts slow down with them
    (``python -m bench scale --db postgres``: items/s halved by 350,000 items with autovacuum off)."""
    if is_sqlite(engine):
        return []
    with engine.connect() as conn:
        autovacuum = conn.execute(text("SHOW autovacuum")).scalar()
    if autovacuum == "on":
        return []
    return ["PostgreSQL runs with autovacuum off: the item table gathers two dead row versions per item and claims "
            "slow down as they pile up (items/s halved by 350,000 items, measured); turn it on "
            "(autovacuum = on in postgresql.conf) or VACUUM (ANALYZE) the labelagent tables on a schedule"]


def create_all(engine: Engine) -> None:
    """Create every table (idempotent). Alembic migrations take over once the schema is released."""

    SQLModel.metadata.create_all(engine)


@contextmanager
def _sqlite_writer_turn(lock: threading.RLock, timeout: float) -> Iterator[None]:
    # past the busy timeout the writer goes on and lets SQLite decide, as it would without the lock (a writer
    # held up inside its transaction must fail with "database is locked", not hang its peers)
    acquired = lock.acquire(timeout=timeout)
    try:
        yield
    finally:
        if acquired:
            lock.release()


def _writer_turn(engine: Engine) -> AbstractContextManager[Any]:
    """Held while this process writes to a SQLite database (see the module's doc); nothing elsewhere."""
    entry = _WRITE_LOCKS.get(engine)
    return _sqlite_writer_turn(*entry) if entry is not None else nullcontext()


@contextmanager
def write_tx(engine: Engine) -> Iterator[Connection]:
    """A write transaction (``BEGIN IMMEDIATE`` on SQLite), committed on success, rolled back on error."""
    with _writer_turn(engine), engine.connect() as conn:
        if is_sqlite(engine):
            conn.execution_options(**{_BEGIN_OPTION: "IMMEDIATE"})
        with conn.begin():
            yield conn


@contextmanager
def read_tx(engine: Engine) -> Iterator[Connection]:
    """A read transaction (a consistent snapshot on SQLite; per-statement on PostgreSQL's READ COMMITTED).
    Never blocks the writer.

    On PostgreSQL the statements run in autocommit: under READ COMMITTED each statement already sees its own
    snapshot, so a transaction around reads adds nothing but two round trips (psycopg's ``BEGIN`` and the
    ``COMMIT``), a third of a one-query read's cost."""
    with engine.connect() as conn:
        if not is_sqlite(engine):
            conn.execution_options(isolation_level="AUTOCOMMIT")
        with conn.begin():
            yield conn


@contextmanager
def session_scope(engine: Engine, *, write: bool = True) -> Iterator[Session]:
    """An ORM session committed on success and rolled back on error (for the API's simple CRUD)."""
    with _writer_turn(engine) if write else nullcontext(), engine.connect() as conn:
        if write and is_sqlite(engine):
            conn.execution_options(**{_BEGIN_OPTION: "IMMEDIATE"})
        with Session(bind=conn, expire_on_commit=False) as session:
            try:
                yield session
                session.commit()
            except BaseException:
                session.rollback()
                raise


# --- transient errors ------------------------------------------------------------------------------------------


def is_transient(exc: BaseException) -> bool:
    """True for database errors a retry may cure: the connection dropped or was refused (PostgreSQL restarting:
    ``AdminShutdown``, "the database system is starting up"), a deadlock or serialization failure, a pool
    timeout, SQLite's "database is locked". False for everything else (constraint violations, bad SQL, our own
    ``LabelAgentError`` errors), which a retry would only repeat.

    A transaction that failed this way was rolled back, or (if the connection dropped while committing) may have
    committed: callers retry only writes that are safe to repeat (lease-fenced, or refused by a unique constraint).
    """
    if isinstance(exc, sa_exc.DBAPIError):
        return exc.connection_invalidated or isinstance(exc, (sa_exc.OperationalError, sa_exc.InterfaceError))
    if isinstance(exc, (sa_exc.DisconnectionError, sa_exc.TimeoutError)):
        return True
    try:
        import psycopg
    except ImportError:  # pragma: no cover - psycopg is a dependency
        return False
    return isinstance(exc, (psycopg.OperationalError, psycopg.InterfaceError))


def backoff_delay(attempt: int, *, base: float = 0.1, cap: float = 2.0) -> float:
    """The wait before retry ``attempt`` (1, 2, ...): exponential from ``base`` up to ``cap``, with jitter (so
    workers that lost the database together do not come back in lockstep)."""
    return min(cap, base * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)


def retry_transient(fn: Callable[[], T], *, what: str, timeout: float = 30.0, base: float = 0.1,
                    cap: float = 2.0, sleep: Callable[[float], None] = time.sleep) -> T:
    """``fn()``, retried with backoff while it fails with a transient error (:func:`is_transient`), for at most
    ``timeout`` seconds; then the last error is raised. For blocking callers (threads): it sleeps."""
    deadline = time.monotonic() + timeout
    attempt = 0
    while True:
        try:
            return fn()
        except Exception as exc:
            attempt += 1
            delay = backoff_delay(attempt, base=base, cap=cap)
            if not is_transient(exc) or time.monotonic() + delay > deadline:
                raise
            log.warning("%s: database unavailable (%s); retry %d in %.2fs", what, _first_line(exc), attempt, delay)
            sleep(delay)


def _first_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None) or exc
    text = str(orig).strip().splitlines()
    return f"{type(orig).__name__}: {text[0]}" if text else type(orig).__name__
