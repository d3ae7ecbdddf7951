"""Corrections reach a running worker's learner, on SQLite and PostgreSQL: the answer feed delivers the corrected
label, the learner trains on it, and its calibration set stays as the reviews made it."""

from __future__ import annotations

import asyncio
import threading

from sqlalchemy import select

from service.runtime import WorkerRuntime
from service.store import SqlStore
from service.store.base import item_t, label_t
from service.store.db import read_tx
from tests.service.runtime.helpers import (
    MemoryVoter,
    Reviewer,
    all_labeled,
    await_until,
    fast_tools,
    runtime_policy,
    stream_items,
)
from tests.service.runtime.test_runtime import fast_settings


def first_label_of(store: SqlStore, source: str) -> tuple[str, str]:
    """(external id, label) of the first item labeled by ``source``."""
    with read_tx(store.engine) as conn:
        row = conn.execute(select(item_t.c.external_id, label_t.c.label).join(item_t, item_t.c.id == label_t.c.item_id)
                           .where(label_t.c.source == source).order_by(label_t.c.id).limit(1)).one()
    return row[0], row[1]


def flip(label: str) -> str:
    return "ham" if label == "spam" else "spam"


def test_a_correction_trains_the_workers_learner_and_not_its_calibration(store: SqlStore) -> None:
    policy = runtime_policy()
    store.projects.create_project(policy.project, policy)
    project = policy.project
    stop = threading.Event()
    reviewer = Reviewer(store, project, "alice", stop)
    corrected: dict[str, str] = {}

    async def main() -> WorkerRuntime:
        runtime = WorkerRuntime(store, fast_settings(), name="w1", tools_factory=fast_tools, batch_size=50)
        task = asyncio.create_task(runtime.run())
        thread = reviewer.start()
        try:
            store.items.ingest(project, stream_items(300))
            runtime.notify(project)
            await await_until(all_labeled(store, project, 300), timeout=30, what="300 items labeled")
            store.items.ingest(project, stream_items(300, start=300))  # after learning from the first wave: auto labels
            runtime.notify(project)
            await await_until(all_labeled(store, project, 600), timeout=30, what="600 items labeled")
            labeler = runtime.labeler(project)
            assert labeler is not None
            learner = labeler.learner
            await await_until(lambda: runtime.stats.answers == store.learning.count_labels(project)["human"],
                              timeout=10,
                              what="every answer fed to the learner")
            calibration = (tuple(learner._iid_rows), tuple(learner._iid_y), tuple(learner._audits))
            n = learner.n_ground_truth
            answers = runtime.stats.answers
            for source in ("agent", "human"):  # an auto label, and the first (cold-start) review's label
                key, label = first_label_of(store, source)
                corrected[key] = flip(label)
                outcome = store.audit.correct_label(project, key, corrected[key], reviewer="ops", note=None,
                                                    actor="test")
                assert outcome.correction is not None
            runtime.notify(project)
            await await_until(lambda: runtime.stats.answers == answers + 2, timeout=10,
                              what="both corrections fed to the learner")
            assert learner.n_ground_truth == n + 1, "the auto-labeled item is new ground truth, the other replaced"
            assert (tuple(learner._iid_rows), tuple(learner._iid_y), tuple(learner._audits)) == calibration
        finally:
            stop.set()
            runtime.stop()
            await asyncio.wait_for(task, 30)
            thread.join(10)
        return runtime

    runtime = asyncio.run(main())
    assert not reviewer.errors and runtime.stats.errors == 0
    labeler = runtime.labeler(project)
    assert labeler is not None
    data = labeler.learner.training_set()
    y_of = {it.key: data.labels[int(y)] for it, y in zip(data.batch.items, data.y, strict=True)}
    assert {key: y_of[key] for key in corrected} == corrected
    memory = next(t for t in labeler.learner.tools if isinstance(t, MemoryVoter))  # i14: the trained copies
    assert memory.fits >= 1
