"""Backtest a policy version: replay the project's ground truth through the real agent, away from the live tables.

The ground-truth items (human reviews, else client labels) arrive in their arrival order, batch by batch, into a
private in-memory SQLite store: the same ingest, claim, graph run and record as a worker, then an oracle answers
the review queue from the ground truth (as ``labelagent replay`` does) and the learner learns from the answers.
The worker cycle is the replay's (a retrain is published ``service.offline.replay.RETRAIN_LAG`` graph runs after it
started, as in the service). The figures are the replay's: auto-label precision with its Clopper-Pearson
interval, auto rate, human reviews.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from typing import Any

from agent.runner import BatchLabeler
from policies import Policy
from service.offline.datasets import LabeledItem
from service.offline.replay import RETRAIN_LAG, stream_through, summarize
from service.runtime.cycle import ProjectWorker
from service.settings import Settings
from service.store import SqlStore
from service.store.db import create_all, make_engine
from tools.base import Tool

ToolFactory = Callable[[Policy], Sequence[Tool]]


def usable(policy: Policy, truth: Sequence[LabeledItem]) -> list[LabeledItem]:
    """The ground truth this version can be judged on: items whose label is in its label set."""
    labels = set(policy.labels)
    return [row for row in truth if row.label in labels]


async def replay_truth(policy: Policy, truth: Sequence[LabeledItem], tools: Sequence[Tool], *, batch_size: int,
                       seed: int) -> dict[str, Any]:
    """Replay ``truth`` (in order) through a fresh agent for ``policy``; returns
    ``service.offline.replay.summarize``'s dict."""
    engine = make_engine("sqlite://")  # private, in memory: nothing reaches the live database
    try:
        create_all(engine)
        store = SqlStore(engine, Settings(database_url="sqlite://", max_batch_items=max(batch_size, 1)))
        store.projects.create_project(policy.project, policy)
        labeler = BatchLabeler(policy, tools, seed=seed)
        worker = ProjectWorker(store, policy.project, labeler, name="backtest", batch_size=batch_size,
                               retrain_lag=RETRAIN_LAG)
        answers = {row.item.key: row.label for row in truth}
        started = time.perf_counter()
        tally = await stream_through(worker, truth, answers, batch_size)
        elapsed = time.perf_counter() - started
        return summarize(policy, answers, tally.decisions, tally.human, tally.tool_calls, labeler, elapsed)
    finally:
        engine.dispose()


def backtest(policy: Policy, truth: Sequence[LabeledItem], tool_factory: ToolFactory, *, batch_size: int = 128,
             seed: int = 0) -> dict[str, Any]:
    """Blocking backtest of one version (run it in a worker thread: it starts its own event loop)."""
    rows = usable(policy, truth)
    return asyncio.run(replay_truth(policy, rows, tool_factory(policy), batch_size=batch_size, seed=seed))
