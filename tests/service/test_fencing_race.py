"""Lease fencing under a real race on PostgreSQL: a worker or reviewer whose lease expired cannot write once someone
else re-claimed its items, even when both transactions run at the same time.

How the store makes this safe: the write transaction first reads the rows it will write with ``SELECT ... FOR
UPDATE`` (``_writable_items`` for batches, ``_locked_tasks`` for answers) and checks the lease token on those
locked rows, then writes them in the same transaction. A re-claim is an ``UPDATE`` of the same rows, so the two
serialise on the row locks:

* the re-claim commits first: the writer's ``SELECT ... FOR UPDATE`` waits for it, then (READ COMMITTED re-reads a
  row that changed while it waited) sees the new token, and writes nothing;
* the writer locks first: the re-claim's ``SELECT ... FOR UPDATE SKIP LOCKED`` skips the rows being written, and
  once the write commits they are no longer claimable.

The tests pause one transaction at a chosen statement (row locks held, not committed), start the other, wait until
PostgreSQL reports it blocked by the first (``pg_blocking_pids``) or done, and release: no sleeps.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import Engine, event, func, select, text

from agent.ports import BatchResult
from policies import ConflictError, Policy
from service.store import RecordResult, ReviewAnswer, SqlStore
from service.store.base import label_t, review_t
from service.store.db import make_engine, read_tx
from tests.factories import make_decision, make_items, make_policy
from tests.service.runtime.helpers import engine_url, labels_per_item, wait_until

pytestmark = pytest.mark.postgres

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


class Gate:
    """Pauses the first transaction on ``engine`` that runs a statement matching ``match``, right after it ran (its
    row locks held, nothing committed), until :meth:`open`. Records the paused session's backend pid."""

    def __init__(self, engine: Engine, match: Callable[[str], bool]) -> None:
        self.engine, self.match = engine, match
        self.reached = threading.Event()
        self._open = threading.Event()
        self.pid: int | None = None
        event.listen(engine, "after_cursor_execute", self._after)

    def _after(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if self.reached.is_set() or not self.match(statement):
            return
        self.pid = cursor.connection.execute("SELECT pg_backend_pid()").fetchone()[0]
        self.reached.set()
        assert self._open.wait(30), "the gate was never opened"

    def open(self) -> None:
        self._open.set()  # the listener stays, inert: removing it while a statement runs would upset SQLAlchemy


@pytest.fixture
def two_sessions(postgres_engine: Engine) -> Iterator[tuple[SqlStore, SqlStore, Engine]]:
    """Store A on the test engine and store B on a second engine (its own connections) over the same schema."""
    other = make_engine(engine_url(postgres_engine))
    try:
        yield SqlStore(postgres_engine), SqlStore(other), other
    finally:
        other.dispose()


def blocked_by(engine: Engine, pid: int) -> Callable[[], bool]:
    """True once some session waits for a lock held by backend ``pid``."""

    def check() -> bool:
        with engine.connect() as conn:
            query = text("SELECT count(*) FROM pg_stat_activity WHERE :pid = ANY(pg_blocking_pids(pid))")
            return bool(conn.execute(query, {"pid": pid}).scalar_one())

    return check


def accept_all(policy: Policy, keys: list[str]) -> BatchResult:
    return BatchResult(policy.key, 0.9, {}, [make_decision(k, "accept", label="spam") for k in keys])


def is_claim_update(table: str) -> Callable[[str], bool]:
    """A claim: ``UPDATE table ... RETURNING``, possibly after CTEs (``WITH ... UPDATE``: the review claim)."""
    return lambda sql: re.match(rf"\s*(WITH\b.*\s)?UPDATE {table} ", sql, re.DOTALL) is not None and "RETURNING" in sql


def test_a_worker_whose_lease_was_reclaimed_cannot_write_while_the_reclaim_is_in_flight(
    two_sessions: tuple[SqlStore, SqlStore, Engine],
) -> None:
    a, b, b_engine = two_sessions
    policy = make_policy()
    a.projects.create_project(policy.project, policy)
    a.items.ingest(policy.project, make_items(10))
    token_a, items = a.items.claim_batch(policy.project, worker="a", size=10, lease_seconds=1, now=at(0))
    keys = [it.key for it in items]
    assert len(keys) == 10
    gate = Gate(b_engine, is_claim_update("item"))
    with ThreadPoolExecutor(2) as pool:
        # B re-claims the expired batch; its UPDATE ran (the rows are B's and locked) but has not committed
        claim_b: Future[tuple[str, list[Any]]] = pool.submit(
            b.items.claim_batch, policy.project, worker="b", size=10, lease_seconds=60, now=at(2)
        )
        assert gate.reached.wait(30)
        assert gate.pid is not None
        # A writes with its old token, at a time its own clock still calls the lease live: the token decides
        write_a: Future[RecordResult] = pool.submit(
            a.items.record_batch, policy.project, accept_all(policy, keys), token_a, now=at(0.5)
        )
        wait_until(blocked_by(a.engine, gate.pid), timeout=30, what="A's write waiting for B's row locks")
        assert not write_a.done()
        gate.open()
        token_b, items_b = claim_b.result(30)
        refused = write_a.result(30)
    assert sorted(it.key for it in items_b) == keys, "B re-claimed the whole expired batch"
    assert refused.labeled == 0 and sorted(refused.fenced) == keys, "A's write was refused, item by item"
    assert labels_per_item(a, policy.project) == dict.fromkeys(keys, 0), "A wrote nothing"
    accepted = b.items.record_batch(policy.project, accept_all(policy, keys), token_b, now=at(3))
    assert accepted.labeled == 10 and not accepted.fenced
    assert labels_per_item(a, policy.project) == dict.fromkeys(keys, 1)


def test_a_reclaim_skips_a_batch_whose_write_is_in_flight(two_sessions: tuple[SqlStore, SqlStore, Engine]) -> None:
    a, b, _ = two_sessions
    policy = make_policy()
    a.projects.create_project(policy.project, policy)
    a.items.ingest(policy.project, make_items(10))
    token_a, items = a.items.claim_batch(policy.project, worker="a", size=10, lease_seconds=1, now=at(0))
    keys = [it.key for it in items]
    # A's write has locked its rows and checked its token (lease live at 0.5 s) but not committed yet
    gate = Gate(a.engine, lambda sql: sql.lstrip().startswith("SELECT item.id") and "FOR UPDATE" in sql)
    with ThreadPoolExecutor(1) as pool:
        write_a = pool.submit(a.items.record_batch, policy.project, accept_all(policy, keys), token_a, now=at(0.5))
        assert gate.reached.wait(30)
        # meanwhile B, at 2 s, finds the lease expired, but the rows are being written: skipped, not waited for
        _, stolen = b.items.claim_batch(policy.project, worker="b", size=10, lease_seconds=60, now=at(2))
        gate.open()
        written = write_a.result(30)
    assert stolen == []
    assert written.labeled == 10 and not written.fenced
    assert b.items.claim_batch(policy.project, worker="b", size=10,
                               now=at(3))[1] == [], "labeled items are not claimable"
    assert labels_per_item(a, policy.project) == dict.fromkeys(keys, 1)


def test_a_reviewer_whose_claim_was_reclaimed_cannot_answer_while_the_reclaim_is_in_flight(
    two_sessions: tuple[SqlStore, SqlStore, Engine],
) -> None:
    a, b, b_engine = two_sessions
    policy = make_policy()
    project = policy.project
    a.projects.create_project(project, policy)
    a.items.ingest(project, make_items(1))
    token, items = a.items.claim_batch(project, worker="agent", size=1)
    a.items.record_batch(project, BatchResult(policy.key, 0.9, {}, [make_decision(items[0].key, "escalate")]), token)
    alice = a.reviews.claim_review(project, reviewer="alice", lease_seconds=1, now=at(0))
    assert alice is not None
    gate = Gate(b_engine, is_claim_update("review_task"))
    with ThreadPoolExecutor(2) as pool:
        claim_bob = pool.submit(b.reviews.claim_review, project, reviewer="bob", lease_seconds=60, now=at(2))
        assert gate.reached.wait(30)
        assert gate.pid is not None
        answer_alice = pool.submit(
            a.reviews.submit_reviews, [ReviewAnswer(alice.task_id, alice.token, "spam")], project=project, now=at(0.5)
        )
        wait_until(blocked_by(a.engine, gate.pid), timeout=30, what="alice's answer waiting for bob's claim")
        assert not answer_alice.done()
        gate.open()
        bob = claim_bob.result(30)
        with pytest.raises(ConflictError, match="stale or not yours"):
            answer_alice.result(30)
    assert bob is not None and bob.task_id == alice.task_id
    with read_tx(a.engine) as conn:
        assert conn.execute(select(func.count()).select_from(review_t)).scalar_one() == 0, "alice wrote nothing"
    b.reviews.submit_reviews([ReviewAnswer(bob.task_id, bob.token, "ham")], project=project, now=at(3))
    with read_tx(a.engine) as conn:
        assert conn.execute(select(review_t.c.reviewer)).scalars().all() == ["bob"]
        assert conn.execute(select(label_t.c.label).where(label_t.c.source == "human")).scalars().all() == ["ham"]
