"""The worker runtime in-process, on SQLite and PostgreSQL: labels end to end, feeds answers to the learner,
retrains in the background, switches policy versions between batches, stops gracefully."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence

import pytest

from policies import Policy, ToolError
from service.runtime import WorkerRuntime
from service.settings import Settings
from service.store import SqlStore
from tests.service.runtime.helpers import (
    MemoryVoter,
    Reviewer,
    all_labeled,
    await_until,
    blocking_tools,
    fast_tools,
    labels_per_item,
    labels_per_item_version,
    runtime_policy,
    slow_tools,
    stalling_tools,
    stream_items,
)
from tools.base import Tool

FAST = {"worker_poll_seconds": 0.05, "feedback_poll_seconds": 0.05, "refresh_seconds": 0.1,
        "feedback_lag_seconds": 5.0}


def fast_settings(**overrides: object) -> Settings:
    return Settings(**{**FAST, **overrides})  # type: ignore[arg-type]


def test_runtime_labels_learns_and_retrains(store: SqlStore) -> None:
    policy = runtime_policy()
    store.projects.create_project(policy.project, policy)
    project = policy.project
    stop = threading.Event()
    reviewer = Reviewer(store, project, "alice", stop)

    async def main() -> WorkerRuntime:
        runtime = WorkerRuntime(store, fast_settings(), name="w1", tools_factory=fast_tools, batch_size=50)
        task = asyncio.create_task(runtime.run())
        thread = reviewer.start()
        try:
            store.items.ingest(project, stream_items(300))
            runtime.notify(project)
            await await_until(all_labeled(store, project, 300), timeout=30, what="the first 300 items labeled")
            labeler = runtime.labeler(project)
            assert labeler is not None
            await await_until(lambda: labeler.learner.n_ground_truth >= store.learning.count_labels(project)["human"],
                              timeout=10, what="every answer fed to the learner")
            store.items.ingest(project, stream_items(300, start=300))
            runtime.notify(project)
            await await_until(all_labeled(store, project, 600), timeout=30, what="all 600 items labeled")
            await await_until(lambda: runtime.stats.answers == store.learning.count_labels(project)["human"],
                              timeout=10,
                              what="the last answers fed to the learner")
        finally:
            stop.set()
            runtime.stop()
            await asyncio.wait_for(task, 30)
            thread.join(10)
        return runtime

    runtime = asyncio.run(main())
    assert not reviewer.errors
    per_item = labels_per_item(store, project)
    assert len(per_item) == 600 and set(per_item.values()) == {1}
    counts = store.learning.count_labels(project)
    labeler = runtime.labeler(project)
    assert labeler is not None
    learner = labeler.learner
    assert runtime.stats.answers == counts["human"] == learner.n_ground_truth
    assert runtime.stats.retrains >= 1 and learner.retrains >= 2  # the load, then background retrains
    memory = next(t for t in labeler.learner.tools if isinstance(t, MemoryVoter))  # i14: the trained copies
    assert memory.fits >= 2
    versions = store.learning.list_model_versions(project, tool="memory")
    assert versions and versions[-1].version == memory.version
    assert counts["agent"] > 0, "after learning from the first wave the agent labels on its own"
    assert runtime.stats.items == 600 and runtime.stats.errors == 0


def test_runtime_restores_the_learner_and_switches_policy(store: SqlStore) -> None:
    policy = runtime_policy()
    store.projects.create_project(policy.project, policy)
    project = policy.project
    store.items.ingest(project, stream_items(120))
    stop = threading.Event()
    reviewer = Reviewer(store, project, "bob", stop)
    settings = fast_settings()

    async def first() -> None:
        runtime = WorkerRuntime(store, settings, name="w1", tools_factory=fast_tools, batch_size=40)
        task = asyncio.create_task(runtime.run())
        thread = reviewer.start()
        try:
            await await_until(all_labeled(store, project, 120), timeout=30, what="120 items labeled")
        finally:
            stop.set()
            runtime.stop()
            await asyncio.wait_for(task, 30)
            thread.join(10)

    asyncio.run(first())
    human = store.learning.count_labels(project)["human"]
    assert human > 0

    stop2 = threading.Event()

    async def second() -> WorkerRuntime:
        runtime = WorkerRuntime(store, settings, name="w2", tools_factory=fast_tools, batch_size=40)
        task = asyncio.create_task(runtime.run())
        thread = Reviewer(store, project, "carol", stop2).start()
        try:
            await await_until(lambda: runtime.labeler(project) is not None, timeout=20, what="the labeler loaded")
            labeler = runtime.labeler(project)
            assert labeler is not None and labeler.learner.n_ground_truth == human  # restored from storage
            v2 = runtime_policy(version=2)
            store.projects.add_policy_version(project, v2, activate=True)
            runtime.notify(project)
            await await_until(lambda: (lab := runtime.labeler(project)) is not None and lab.policy.version == 2,
                              timeout=20, what="the switch to version 2")
            store.items.ingest(project, stream_items(50, start=120))
            runtime.notify(project)
            await await_until(all_labeled(store, project, 170), timeout=30, what="the new items labeled")
        finally:
            stop2.set()
            runtime.stop()
            await asyncio.wait_for(task, 30)
            thread.join(10)
        return runtime

    runtime = asyncio.run(second())
    assert runtime.stats.switches == 1
    by_version = labels_per_item_version(store, project)
    assert set(by_version.values()) == {1}
    assert sum(1 for (_, v) in by_version if v == 2) == 50  # every new item under the new version
    assert all(store.items.item_view(project, f"item-{i:06d}").item.status == "labeled" for i in range(120, 170))


def test_stop_finishes_the_batch_in_progress(store: SqlStore) -> None:
    policy = runtime_policy()
    store.projects.create_project(policy.project, policy)
    project = policy.project
    store.items.ingest(project, stream_items(30))

    async def main() -> WorkerRuntime:
        runtime = WorkerRuntime(store, fast_settings(), name="slow", tools_factory=slow_tools, batch_size=10)
        task = asyncio.create_task(runtime.run())
        await await_until(lambda: store.items.count_items(project)["leased"] > 0, timeout=20, what="a batch leased")
        held.append(store.items.count_items(project)["leased"])
        runtime.stop()
        await asyncio.wait_for(task, 10)
        return runtime

    held: list[int] = []
    runtime = asyncio.run(main())
    counts = store.items.count_items(project)
    assert (counts["leased"], counts["pending"], counts["labeled"] + counts["in_review"]) == (0, 30 - held[0], held[0])
    assert (runtime.stats.batches, runtime.stats.items, runtime.stats.released) == (1, held[0], 0)


def test_abort_releases_the_batch_in_progress(store: SqlStore) -> None:
    policy = runtime_policy()
    store.projects.create_project(policy.project, policy)
    project = policy.project
    store.items.ingest(project, stream_items(30))

    async def main() -> WorkerRuntime:
        runtime = WorkerRuntime(store, fast_settings(), name="stuck", tools_factory=stalling_tools, batch_size=10)
        task = asyncio.create_task(runtime.run())
        await await_until(lambda: store.items.count_items(project)["leased"] > 0, timeout=20, what="a batch leased")
        held.append(store.items.count_items(project)["leased"])
        runtime.abort()
        with pytest.raises(asyncio.CancelledError):
            await asyncio.wait_for(task, 10)
        return runtime

    held: list[int] = []
    runtime = asyncio.run(main())
    assert runtime.stats.released == held[0] > 0
    assert store.items.count_items(project)["pending"] == 30


@pytest.mark.slow
def test_heartbeat_keeps_the_lease_of_a_batch_longer_than_the_lease(store: SqlStore) -> None:
    """The batch blocks the event loop for 2.5 s with a 1 s lease: the heartbeat thread keeps it, nothing is fenced."""
    policy = runtime_policy()
    store.projects.create_project(policy.project, policy)
    project = policy.project
    store.items.ingest(project, stream_items(10))

    async def main() -> WorkerRuntime:
        runtime = WorkerRuntime(store, fast_settings(lease_seconds=1), name="long", tools_factory=blocking_tools,
                                batch_size=10)
        task = asyncio.create_task(runtime.run())
        await await_until(lambda: runtime.stats.batches == 1, timeout=30, what="the long batch recorded")
        runtime.stop()
        await asyncio.wait_for(task, 10)
        return runtime

    runtime = asyncio.run(main())
    assert (runtime.stats.items, runtime.stats.fenced) == (10, 0)
    counts = store.items.count_items(project)
    assert counts["labeled"] + counts["in_review"] == 10


def test_a_project_whose_tools_cannot_be_built_does_not_stop_the_others(store: SqlStore) -> None:
    for name in ("good", "bad"):
        policy = runtime_policy(name)
        store.projects.create_project(name, policy)
        store.items.ingest(name, stream_items(20))

    def tools(policy: Policy) -> Sequence[Tool]:
        if policy.project == "bad":
            raise ToolError("tool 'clf': unknown tool kind 'quantum'")
        return fast_tools(policy)

    def decided(project: str) -> int:
        counts = store.items.count_items(project)
        return counts["labeled"] + counts["in_review"]

    async def main() -> WorkerRuntime:
        runtime = WorkerRuntime(store, fast_settings(), name="w", tools_factory=tools, batch_size=10)
        task = asyncio.create_task(runtime.run())
        await await_until(lambda: decided("good") == 20, timeout=20, what="the good project's items")
        await await_until(lambda: runtime.stats.errors >= 1, timeout=20, what="the bad project's error")
        runtime.stop()
        await asyncio.wait_for(task, 10)
        return runtime

    runtime = asyncio.run(main())
    assert runtime.labeler("good") is not None and runtime.labeler("bad") is None
    assert store.items.count_items("bad")["pending"] == 20
