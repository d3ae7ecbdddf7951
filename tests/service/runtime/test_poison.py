"""Poison items: an item that makes the agent fail is singled out of its batch (the rest is labeled), retried
``max_attempts`` times, then marked ``failed`` with the reason, visible in the item's status and cleared on
re-queue."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from policies import Policy
from service.api.ops.items import item_status
from service.runtime import WorkerRuntime
from service.settings import Settings
from service.store import SqlStore
from tests.service.runtime.helpers import KeywordVoter, MemoryVoter, await_until, runtime_policy, stream_items
from tools.base import Batch, Tool, ToolContext, Votes

POISON = "item-000037"


class PoisonedVoter(KeywordVoter):
    """A keyword voter that raises (not a ``ToolError``: the graph run fails) on a batch holding ``POISON``."""

    async def predict(self, batch: Batch, context: ToolContext) -> Votes:
        if any(it.key == POISON for it in batch.items):
            raise ValueError(f"cannot parse item {POISON}: " + "x" * 5000)
        return await super().predict(batch, context)


def poisoned_tools(policy: Policy) -> Sequence[Tool]:
    return [PoisonedVoter(), MemoryVoter()]


def test_a_poison_item_fails_with_its_reason_and_the_others_are_labeled(store: SqlStore) -> None:
    settings = Settings(worker_poll_seconds=0.05, feedback_poll_seconds=0.05, refresh_seconds=0.1, max_attempts=3)
    store = SqlStore(store.engine, settings)
    policy = runtime_policy()
    project = policy.project
    store.projects.create_project(project, policy)
    store.items.ingest(project, stream_items(120))

    def settled() -> bool:
        counts = store.items.count_items(project)
        return counts["failed"] == 1 and counts["labeled"] + counts["in_review"] == 119

    async def main() -> WorkerRuntime:
        runtime = WorkerRuntime(store, settings, name="w1", tools_factory=poisoned_tools, batch_size=64)
        task = asyncio.create_task(runtime.run())
        try:
            await await_until(settled, timeout=60, what="119 items labeled or queued and the poison item failed")
        finally:
            runtime.stop()
            await asyncio.wait_for(task, 30)
        return runtime

    runtime = asyncio.run(main())
    item = store.items.item_view(project, POISON).item
    assert item.status == "failed" and item.attempts == 3
    assert item.error is not None and item.error.startswith(f"ValueError: cannot parse item {POISON}")
    assert len(item.error) <= 2000
    status = item_status(store=store, project=project, external_id=POISON)
    assert status.status == "failed" and status.error == item.error
    assert all(store.items.item_view(project,
                                     it.key).item.error is None for it in stream_items(120) if it.key != POISON)
    assert runtime.stats.items == 119 and runtime.stats.errors >= 3

    assert store.audit.requeue_failed(project, keys=[POISON], actor="op") == [POISON]
    again = store.items.item_view(project, POISON).item
    assert (again.status, again.attempts, again.error) == ("pending", 0, None)
    assert item_status(store=store, project=project, external_id=POISON).error is None
