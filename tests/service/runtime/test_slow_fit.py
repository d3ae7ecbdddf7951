"""The service's runtime with a slow fit (issue 14's service-path test): a retrain in flight holds its project's next
batch for a bounded time (``retrain_wait_seconds``), then the runtime labels on with the snapshot in force, and no
item is decided by the model being fitted before the snapshot made for it is published; once the fit finishes, the
runtime publishes it between batches."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager

from sqlalchemy import func, select

from agent.learner import Learner
from service.runtime import WorkerRuntime
from service.store import SqlStore
from service.store.base import label_t, vote_t
from service.store.db import read_tx
from tests.service.runtime.helpers import (
    KeywordVoter,
    MemoryVoter,
    Reviewer,
    all_labeled,
    await_until,
    labels_per_item,
    runtime_policy,
    stream_items,
)
from tests.service.runtime.test_runtime import fast_settings
from tools.base import Batch, ModelInfo, Tool, ToolContext, TrainingSet, Votes

GATE_SECONDS = 120.0  # the longest a fit waits for the test (released long before on any machine)
FIRST = 400  # items before the fit is held: enough for a first certificate under the default rule
CHUNK = 100  # items streamed at a time until a held fit waits
MAX_WAIT_ITEMS = 3_000  # at most this many of them (a retrain needs ten answers; audits alone give 150 here)
WAIT = 2.0  # retrain_wait_seconds where the runtime is to label on past a held fit


class GatedMemory(MemoryVoter):
    """The memory voter with an injected delay: a fit that starts while ``hold`` is set swaps its new model in, then
    waits until the test sets ``release`` (counted in ``waiting``); each vote's evidence names the model that cast
    it."""

    hold = threading.Event()
    release = threading.Event()
    waiting = 0
    _lock = threading.Lock()

    def fit(self, data: TrainingSet) -> ModelInfo:
        held = self.hold.is_set()
        info = super().fit(data)  # the new model is in this object from here on: the wait comes after the swap
        if held:
            with self._lock:
                GatedMemory.waiting += 1
            if not self.release.wait(GATE_SECONDS):
                raise TimeoutError("the test never released the fit")
        return info

    def fork(self) -> GatedMemory:
        return GatedMemory(self.name, cost=self.cost)

    async def predict(self, batch: Batch, context: ToolContext) -> Votes:
        version = self.version  # the model that votes (the store keeps the snapshot's versions with the votes)
        votes = await super().predict(batch, context)
        votes.evidence = [version] * len(batch)
        return votes


def gated_tools(_: object) -> Sequence[Tool]:
    return [KeywordVoter(), GatedMemory()]


def _last_ids(store: SqlStore) -> tuple[int, int]:
    """The newest vote and label ids: what is recorded from now on has larger ids."""
    with read_tx(store.engine) as conn:
        return (conn.execute(select(func.coalesce(func.max(vote_t.c.id), 0))).scalar_one(),
                conn.execute(select(func.coalesce(func.max(label_t.c.id), 0))).scalar_one())


def _decided_since(store: SqlStore, since: tuple[int, int]) -> tuple[set[str | None], set[float | None]]:
    """The memory models that voted (from the votes' evidence), and the thresholds of the auto labels, recorded
    after ``since``."""
    with read_tx(store.engine) as conn:
        versions: set[str | None] = set(conn.execute(select(vote_t.c.evidence).where(
            vote_t.c.id > since[0], vote_t.c.tool == "memory")).scalars())
        thresholds: set[float | None] = set(conn.execute(select(label_t.c.threshold).where(
            label_t.c.id > since[1], label_t.c.source == "agent")).scalars())
    return versions, thresholds


def _labeled_or_held(labeled: Callable[[], bool]) -> Callable[[], bool]:
    return lambda: GatedMemory.waiting > 0 or labeled()


async def _stream_until_a_fit_waits(store: SqlStore, runtime: WorkerRuntime, project: str) -> int:
    """Stream items past ``FIRST`` in chunks until a held fit waits; returns the items ingested. Once certified,
    most items are auto-labeled and a retrain waits for its answers (audits and escalations, a random share of
    each chunk), so how many items that takes varies from run to run."""
    n = FIRST
    while GatedMemory.waiting == 0 and n < FIRST + MAX_WAIT_ITEMS:
        store.items.ingest(project, stream_items(CHUNK, start=n))
        n += CHUNK
        runtime.notify(project)
        await await_until(_labeled_or_held(all_labeled(store, project, n)), timeout=60 + WAIT,
                          what=f"the first {n} items labeled, or a fit that waits")
    return n


async def _certified(store: SqlStore, runtime: WorkerRuntime, project: str) -> Learner:
    """Wait for the first ``FIRST`` items labeled and a certified snapshot with a trained memory; the learner."""
    await await_until(all_labeled(store, project, FIRST), timeout=60, what="the first items labeled")
    labeler = runtime.labeler(project)
    assert labeler is not None
    learner = labeler.learner
    await await_until(lambda: learner.snapshot.threshold is not None and learner.retrains >= 2, timeout=60,
                      what="a certified snapshot with a trained memory")
    return learner


@asynccontextmanager
async def gated_runtime(store: SqlStore, *, hold: bool, wait: float = WAIT) -> AsyncIterator[tuple[WorkerRuntime, str]]:
    """A project of the runtime policy, a running worker runtime with the gated memory voter (its fits held from
    the start when ``hold``; a retrain holds the next batch ``wait`` seconds) and a reviewer thread answering; on
    exit every held fit is released and all stop."""
    policy = runtime_policy()
    store.projects.create_project(policy.project, policy)
    stop = threading.Event()
    reviewer = Reviewer(store, policy.project, "alice", stop)
    if hold:
        GatedMemory.hold.set()
    else:
        GatedMemory.hold.clear()
    GatedMemory.release.clear()
    GatedMemory.waiting = 0
    runtime = WorkerRuntime(store, fast_settings(retrain_wait_seconds=wait), name="w1", tools_factory=gated_tools,
                            batch_size=50)
    task = asyncio.create_task(runtime.run())
    thread = reviewer.start()
    try:
        yield runtime, policy.project
    finally:
        GatedMemory.hold.clear()
        GatedMemory.release.set()
        stop.set()
        runtime.stop()
        await asyncio.wait_for(task, 60)
        thread.join(10)


def test_a_slow_fit_decides_nothing_before_its_snapshot_is_published(store: SqlStore) -> None:
    async def main() -> None:
        async with gated_runtime(store, hold=False) as (runtime, project):
            # The default rule (betting) needs 44 error-free calibration items at alpha 0.1, and cold start keeps
            # at most that many samples waiting at once: 400 items leave room for the first certificate.
            store.items.ingest(project, stream_items(FIRST))
            runtime.notify(project)
            learner = await _certified(store, runtime, project)
            GatedMemory.hold.set()
            worker = runtime.state.loops[project].worker
            n = await _stream_until_a_fit_waits(store, runtime, project)
            await await_until(lambda: worker.training is not None and GatedMemory.waiting > 0, timeout=60,
                              what="a retrain whose fit waits")
            old = learner.snapshot  # in force since the retrain started: no answer reaches the learner meanwhile
            since = _last_ids(store)
            store.items.ingest(project, stream_items(300, start=n))
            runtime.notify(project)
            await await_until(all_labeled(store, project, n + 300), timeout=60,
                              what="the service labeling on while the fit waits")
            assert worker.training is not None and learner.snapshot is old, "the fit is still waiting"
            versions, thresholds = _decided_since(store, since)
            assert versions == {old.tool_versions["memory"]}, "only the model in force voted"
            assert thresholds <= {old.threshold}
            GatedMemory.hold.clear()
            GatedMemory.release.set()
            await await_until(lambda: learner.snapshot.version > old.version, timeout=60,
                              what="the finished retrain published between batches")
            assert learner.snapshot.tool_versions["memory"] != old.tool_versions["memory"]
            since = _last_ids(store)
            store.items.ingest(project, stream_items(100, start=n + 300))
            runtime.notify(project)
            await await_until(all_labeled(store, project, n + 400), timeout=60, what="the last items labeled")
            versions, _ = _decided_since(store, since)
            assert versions and old.tool_versions["memory"] not in versions

    asyncio.run(main())


def test_a_batch_waits_for_the_retrain_in_flight(store: SqlStore) -> None:
    """Within ``retrain_wait_seconds`` of a retrain's start the runtime decides nothing of its project: items that
    arrive meanwhile wait, and the retrained models decide them once published (not the models they replace)."""

    async def main() -> None:
        async with gated_runtime(store, hold=False, wait=GATE_SECONDS) as (runtime, project):
            store.items.ingest(project, stream_items(FIRST))
            runtime.notify(project)
            learner = await _certified(store, runtime, project)
            worker = runtime.state.loops[project].worker
            GatedMemory.hold.set()
            n = await _stream_until_a_fit_waits(store, runtime, project)
            old = learner.snapshot
            since = _last_ids(store)
            store.items.ingest(project, stream_items(100, start=n))
            runtime.notify(project)
            rounds = runtime.stats.rounds
            await await_until(lambda: runtime.stats.rounds >= rounds + 2, timeout=60,
                              what="a whole round of the runtime after the items arrived")
            assert worker.holds_batches() and learner.snapshot is old, "the fit is still waiting"
            assert _decided_since(store, since) == (set(), set()), "nothing decided while the fit runs"
            GatedMemory.hold.clear()
            GatedMemory.release.set()
            await await_until(all_labeled(store, project, n + 100), timeout=60, what="the waiting items labeled")
            versions, _ = _decided_since(store, since)
            assert learner.snapshot.version > old.version
            assert versions and old.tool_versions["memory"] not in versions, "decided by the retrained models"

    asyncio.run(main())


def test_without_a_certificate_a_stuck_fit_does_not_stop_the_labeling(store: SqlStore) -> None:
    """No certificate in force and a fit that never finishes: the runtime waits for it a bounded time
    (``retrain_wait_seconds``), then labels on, every item escalated to humans; none is lost or auto-labeled."""

    async def main() -> None:
        async with gated_runtime(store, hold=True) as (runtime, project):
            store.items.ingest(project, stream_items(200))
            runtime.notify(project)
            await await_until(lambda: GatedMemory.waiting > 0, timeout=60, what="a first fit that waits")
            labeler = runtime.labeler(project)
            assert labeler is not None and labeler.learner.snapshot.threshold is None
            store.items.ingest(project, stream_items(200, start=200))
            runtime.notify(project)
            await await_until(all_labeled(store, project, 400), timeout=60 + WAIT,
                              what="the items labeled by humans while the fit is stuck")
            assert runtime.state.loops[project].worker.training is not None, "the fit is still waiting"
            assert labeler.learner.snapshot.threshold is None
            _, thresholds = _decided_since(store, (0, 0))
            assert thresholds == set(), "nothing auto-labeled without a certificate"
            assert set(labels_per_item(store, project).values()) == {1}, "each item labeled once"

    asyncio.run(main())
