"""Faults on PostgreSQL: worker processes under load, one killed with SIGKILL every few seconds or every eighth of the
stream labeled, whichever comes first (a fresh one takes its place), and PostgreSQL restarted once; at the end every
ingested item is labeled exactly once, none is lost, and no worker died that was not killed.

The test restarts the local cluster that serves ``LABELAGENT_TEST_POSTGRES_URL`` (``pg_ctlcluster ... restart``, fast
mode: a few seconds). It skips when that server is not a local Debian-style cluster it can restart, or when
``LABELAGENT_NO_PG_RESTART`` is set (a PostgreSQL shared with others)."""

from __future__ import annotations

import os
import random
import shutil
import signal
import subprocess
import threading
import time
from pathlib import Path

import pytest
from sqlalchemy import Engine

from policies import ConflictError
from service.settings import Settings
from service.store import SqlStore
from service.store.db import is_transient
from tests.service.runtime.helpers import (
    FAST,
    SPAWN,
    Reviewer,
    engine_url,
    labels_per_item,
    labels_per_item_version,
    reviews_per_task,
    runtime_policy,
    stop_processes,
    stream_items,
    wait_until,
    worker_process,
)

N_ITEMS = 600  # long enough for two kills after the restart: the agent auto-labels this stream quickly
KILL_EVERY = 2.5
KILL_EVERY_ITEMS = N_ITEMS // 8  # ... or every this many items labeled, whichever comes first: fast workers too
RESTART_AT = N_ITEMS // 5  # labeled items before the restart: the workers are past loading, mid-batch
WORKER_SETTINGS = {**FAST, "lease_seconds": 3.0, "max_attempts": 100}


def _cluster(engine: Engine) -> list[str]:
    """[version, name] of the local cluster listening on the engine's port, or skip."""
    if os.environ.get("LABELAGENT_NO_PG_RESTART"):
        pytest.skip("LABELAGENT_NO_PG_RESTART is set: this test restarts PostgreSQL")
    if shutil.which("pg_lsclusters") is None or shutil.which("pg_ctlcluster") is None:
        pytest.skip("no pg_ctlcluster here to restart PostgreSQL")
    if engine.url.host not in {"127.0.0.1", "localhost", "::1"}:
        pytest.skip(f"PostgreSQL at {engine.url.host} is not local: this test restarts it")
    port = str(engine.url.port or 5432)
    out = subprocess.run(["pg_lsclusters", "--no-header"], capture_output=True, text=True, timeout=30).stdout
    for line in out.splitlines():
        fields = line.split()
        if len(fields) >= 4 and fields[2] == port and fields[3] == "online" and Path("/etc/postgresql").is_dir():
            return fields[:2]
    pytest.skip(f"no local cluster online on port {port} (pg_lsclusters)")


def _pg_ctl(action: str, cluster: list[str]) -> None:
    proc = subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", *cluster, action], timeout=60, capture_output=True, text=True
    )
    assert proc.returncode == 0, f"pg_ctlcluster {action} failed: {proc.stderr.strip() or proc.stdout.strip()}"


def _pg_online(cluster: list[str]) -> bool:
    out = subprocess.run(["pg_lsclusters", "--no-header", *cluster], capture_output=True, text=True, timeout=30)
    return "online" in out.stdout


class ResilientReviewer(Reviewer):
    """A reviewer that comes back after the database went away (PostgreSQL restarting) instead of giving up, and
    claims again when an answer is refused because its claim expired meanwhile and another reviewer took the task
    (the lease fencing at work: the test checks that every task got exactly one answer)."""

    refused: int = 0

    def run(self) -> None:
        while not self.stop.is_set():
            super().run()
            refused = [e for e in self.errors if isinstance(e, ConflictError)]
            self.refused += len(refused)
            if any(not is_transient(e) and not isinstance(e, ConflictError) for e in self.errors):
                return  # a real error: reported by the test
            self.errors.clear()
            self.stop.wait(0.2)


def _labeled(store: SqlStore, project: str) -> int | None:
    try:
        return store.items.count_items(project)["labeled"]
    except Exception as exc:
        if is_transient(exc):
            return None  # PostgreSQL is restarting
        raise


@pytest.mark.slow
@pytest.mark.postgres
def test_workers_survive_sigkills_and_a_postgres_restart(postgres_engine: Engine) -> None:
    cluster = _cluster(postgres_engine)
    n = N_ITEMS
    store = SqlStore(postgres_engine, Settings(review_lease_seconds=3))  # a claim lost in the restart returns
    policy = runtime_policy()
    project = policy.project
    store.projects.create_project(project, policy)
    url = engine_url(postgres_engine)
    counter = iter(range(10_000))
    names: dict[int, str] = {}

    def spawn() -> SPAWN.Process:  # type: ignore[name-defined]
        name = f"w{next(counter)}"
        proc = SPAWN.Process(target=worker_process, args=(url, name, WORKER_SETTINGS, "fast", 50), daemon=True)
        proc.start()
        assert proc.pid is not None
        names[proc.pid] = name
        return proc

    procs = [spawn() for _ in range(3)]
    killed: set[int] = set()
    stop = threading.Event()
    reviewers = [ResilientReviewer(store, project, f"r{i}", stop) for i in range(6)]
    threads = [r.start() for r in reviewers]
    rng = random.Random(4)
    outage: list[float] = []  # how long the restart took, once it is done
    restart_errors: list[BaseException] = []

    def restart() -> None:
        # in a thread, so that kills go on meanwhile: the workers may finish the stream while pg_ctlcluster still
        # waits for the server, and a kill loop stuck in the restart then saw too few kills
        began = time.monotonic()
        try:
            _pg_ctl("restart", cluster)  # fast mode: open transactions are rolled back, sessions ended
        except BaseException as exc:
            restart_errors.append(exc)
        outage.append(time.monotonic() - began)

    restarting: threading.Thread | None = None
    timeline: list[tuple[float, int | None]] = []
    start = time.monotonic()
    try:
        # The second half arrives only after two kills and the restart: the agent may label the first half in a few
        # large steps (a new certificate decides the waiting items at once), so the kills must not race the stream.
        items = stream_items(n)
        store.items.ingest(project, items[:n // 2])
        rest = items[n // 2:]
        deadline = start + 120
        next_kill, next_kill_items = start + KILL_EVERY, KILL_EVERY_ITEMS
        while True:
            labeled = _labeled(store, project)
            now = time.monotonic()
            timeline.append((round(now - start, 1), labeled))
            if labeled is not None and labeled >= n:
                break
            dead = [
                f"{names[p.pid]} (exit code {p.exitcode})"
                for p in procs  # type: ignore[index]
                if p.pid not in killed and not p.is_alive()
            ]
            assert not dead, f"workers died that were not killed: {dead}; labeled over time: {timeline[::10]}"
            assert now < deadline, f"timed out: {_labeled(store, project)} of {n} labeled; {timeline[::10]}"
            if now >= next_kill or (labeled is not None and labeled >= next_kill_items):
                victim = rng.choice([p for p in procs if p.is_alive()])
                assert victim.pid is not None
                os.kill(victim.pid, signal.SIGKILL)
                killed.add(victim.pid)
                victim.join(10)
                procs.append(spawn())
                next_kill, next_kill_items = now + KILL_EVERY, (labeled or 0) + KILL_EVERY_ITEMS
            if restarting is None and labeled is not None and labeled >= RESTART_AT:
                restarting = threading.Thread(target=restart, name="pg-restart", daemon=True)
                restarting.start()
            if rest and outage and len(killed) >= 2:
                store.items.ingest(project, rest)
                rest = []
            stop.wait(0.1)
        elapsed = time.monotonic() - start
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        alive_at_end = {names[p.pid]: p.is_alive() for p in procs if p.pid not in killed}  # type: ignore[index]
        stop_processes(procs)
        if restarting is not None:
            restarting.join(90)
        if not _pg_online(cluster):
            _pg_ctl("start", cluster)
        wait_until(lambda: _pg_online(cluster), timeout=60, what="PostgreSQL back online")
    assert not restart_errors, restart_errors
    assert outage and len(killed) >= 2, f"{len(killed)} kills, restart took {outage}"
    assert all(alive_at_end.values()), f"workers not killed outlive the restart: {alive_at_end}"
    errors = [e for r in reviewers for e in r.errors]
    assert not errors, errors[:3]
    per_item = labels_per_item(store, project)
    assert len(per_item) == n and set(per_item.values()) == {1}, "every item labeled exactly once, none lost"
    assert set(labels_per_item_version(store, project).values()) == {1}
    assert set(reviews_per_task(store, project).values()) == {1}, "one answer per task (overlap 1), none twice"
    assert store.items.count_items(project)["labeled"] == n
    print(
        f"\nfault test: {n} items in {elapsed:.1f}s, {len(killed)} workers killed, PostgreSQL restart took "
        f"{outage[0]:.1f}s"
    )
