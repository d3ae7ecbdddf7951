"""Workers as separate processes sharing one database: several workers and reviewers at once on PostgreSQL, and
a worker killed with SIGKILL in the middle of a batch (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
import os
import signal
import threading
from collections import Counter
from datetime import datetime

import pytest
from sqlalchemy import Engine, select

from service.runtime import WorkerRuntime
from service.settings import Settings
from service.store import SqlStore
from service.store.base import item_t, label_t
from service.store.db import read_tx
from tests.service.runtime.helpers import (
    FAST,
    SPAWN,
    Reviewer,
    all_labeled,
    await_until,
    engine_url,
    fast_tools,
    labels_per_item,
    labels_per_item_version,
    reviews_per_task,
    runtime_policy,
    stop_processes,
    stream_items,
    wait_until,
    worker_process,
)


def _ingest(store: SqlStore, project: str, n: int, *, start: int = 0) -> None:
    for i in range(start, start + n, 1000):
        store.items.ingest(project, stream_items(min(1000, start + n - i), start=i))


@pytest.mark.slow
@pytest.mark.postgres
def test_four_worker_processes_and_twenty_reviewers(postgres_engine: Engine) -> None:
    n = 5000
    store = SqlStore(postgres_engine, Settings())
    policy = runtime_policy()
    store.projects.create_project(policy.project, policy)
    project = policy.project
    first = 500
    _ingest(store, project, first)
    results = SPAWN.Queue()
    procs = [SPAWN.Process(target=worker_process, args=(engine_url(postgres_engine), f"w{i}", FAST, "fast", 100,
                                                        results), name=f"w{i}") for i in range(4)]
    stop = threading.Event()
    reviewers = [Reviewer(store, project, f"r{i:02d}", stop) for i in range(20)]
    for proc in procs:
        proc.start()
    threads = [r.start() for r in reviewers]
    try:
        # the first items teach the agents (cold start: humans answer them); the rest they mostly label alone
        wait_until(all_labeled(store, project, first), timeout=60, what=f"the first {first} items labeled")
        _ingest(store, project, n - first, start=first)
        wait_until(all_labeled(store, project, n), timeout=60, what=f"all {n} items labeled")
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        stop_processes(procs)
    assert [p.exitcode for p in procs] == [0, 0, 0, 0], "SIGTERM stops a worker cleanly"
    done = dict(results.get(timeout=10) for _ in procs)
    assert all(done[f"w{i}"] > 0 for i in range(4)), f"every worker took batches: {done}"
    assert sum(done.values()) == n, f"every item went through exactly one graph run: {done}"
    errors = [e for r in reviewers for e in r.errors]
    assert not errors, errors[:3]

    per_item = labels_per_item(store, project)
    assert len(per_item) == n and set(per_item.values()) == {1}, "every item labeled, none twice"
    assert set(labels_per_item_version(store, project).values()) == {1}
    claims = Counter(c.task_id for r in reviewers for c in r.claims)
    assert claims and set(claims.values()) == {1}, "no task was held by two reviewers"
    per_task = reviews_per_task(store, project)
    assert set(per_task) == set(claims) and set(per_task.values()) == {1}, "one answer per task at overlap 1"
    assert all(c.submitted is not None for r in reviewers for c in r.claims)
    counts = store.learning.count_labels(project)
    assert counts["human"] == len(claims) and counts["agent"] + counts["human"] == n


def _leased_by(store: SqlStore, owner: str) -> dict[str, datetime]:
    with read_tx(store.engine) as conn:
        rows = conn.execute(select(item_t.c.external_id, item_t.c.lease_expires_at)
                            .where(item_t.c.lease_owner == owner, item_t.c.status == "leased"))
        return {key: expires for key, expires in rows}


def _labels_at(store: SqlStore, keys: list[str]) -> dict[str, tuple[datetime, int]]:
    with read_tx(store.engine) as conn:
        rows = conn.execute(select(item_t.c.external_id, label_t.c.created_at, item_t.c.attempts)
                            .join(label_t, label_t.c.item_id == item_t.c.id).where(item_t.c.external_id.in_(keys)))
        return {key: (created.replace(tzinfo=None) if created.tzinfo is None else created, attempts)
                for key, created, attempts in rows}


@pytest.mark.slow
def test_a_killed_worker_s_batch_is_labeled_once_after_its_lease_expires(engine: Engine) -> None:
    lease = 2
    settings = {**FAST, "lease_seconds": lease}
    store = SqlStore(engine, Settings(**settings))  # type: ignore[arg-type]
    policy = runtime_policy()
    store.projects.create_project(policy.project, policy)
    project = policy.project
    store.items.ingest(project, stream_items(200))
    doomed = SPAWN.Process(target=worker_process, args=(engine_url(engine), "doomed", settings, "stalling", 50))
    doomed.start()
    try:
        # one claim is one transaction: once any item is leased to it, its whole batch is
        wait_until(lambda: len(_leased_by(store, "doomed")) > 0, timeout=60, what="the doomed worker's batch")
        assert doomed.pid is not None
        os.kill(doomed.pid, signal.SIGKILL)  # mid-batch: its tool never returns
        doomed.join(10)
    finally:
        if doomed.is_alive():
            doomed.kill()
    assert doomed.exitcode == -signal.SIGKILL
    held = _leased_by(store, "doomed")  # final now: nobody extends these leases any more
    assert 0 < len(held) <= 50
    expired_at = max(held.values())

    stop = threading.Event()
    reviewer = Reviewer(store, project, "rescuer", stop)

    async def rescue() -> WorkerRuntime:
        runtime = WorkerRuntime(store, Settings(**settings), name="rescuer", tools_factory=fast_tools,  # type: ignore[arg-type]
                                batch_size=50)
        task = asyncio.create_task(runtime.run())
        thread = reviewer.start()
        try:
            await await_until(all_labeled(store, project, 200), timeout=60, what="all items labeled")
        finally:
            stop.set()
            runtime.stop()
            await asyncio.wait_for(task, 30)
            thread.join(10)
        return runtime

    runtime = asyncio.run(rescue())
    assert runtime.stats.items == 200 and runtime.stats.fenced == 0
    per_item = labels_per_item(store, project)
    assert len(per_item) == 200 and set(per_item.values()) == {1}, "each item labeled exactly once"
    rescued = _labels_at(store, list(held))
    assert len(rescued) == len(held)
    for key, (created, attempts) in rescued.items():
        assert attempts == 2, f"{key}: claimed by the doomed worker, then once more after its lease expired"
        expiry = expired_at.replace(tzinfo=None) if created.tzinfo is None else expired_at
        assert created >= expiry, f"{key} was labeled before the dead worker's lease expired"
