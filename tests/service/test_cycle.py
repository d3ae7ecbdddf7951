"""The worker cycle's retrain pick-up: a retrain fits copies of the models, and nothing it fitted decides before the
snapshot made for it (pool and threshold) is published; with a certificate in force the service publishes a finished
retrain between graph runs, the replay a stated number of runs after it started (issue 13's single cycle, issue 14's
"one certified snapshot"); without one, the next run waits for the retrain in flight."""

from __future__ import annotations

import asyncio
import threading

from agent.ports import BatchResult
from agent.runner import BatchLabeler
from policies import example_policy
from service.offline.datasets import load_csv
from service.offline.reviewers import Reviewers
from service.runtime.cycle import ProjectWorker
from service.store import SqlStore
from tests.factories import dataset_path
from tools.base import ModelInfo, TrainingSet
from tools.registry import build_tools
from tools.text_classifier import TextClassifier

GATE_SECONDS = 120.0  # the longest a test lets a gated fit wait (released long before on any machine)


class GatedClassifier(TextClassifier):
    """The example's classifier with an injected delay: ``fit`` waits until the test opens the gate."""

    gate = threading.Event()

    def fit(self, data: TrainingSet) -> ModelInfo:
        if not self.gate.wait(GATE_SECONDS):
            raise TimeoutError("the test never opened the gate")
        return super().fit(data)


def _voted_versions(result: BatchResult, tool: str) -> set[str]:
    """The model versions of ``tool`` that actually voted in a graph run (its evidence starts with the version)."""
    return {v.evidence.split(":")[0] for d in result.decisions for v in d.votes if v.tool == tool and not v.abstained}


def _worker(store: SqlStore, lag: int | None, items: int = 2000) -> tuple[ProjectWorker, dict[str, str]]:
    policy = example_policy("sms_spam")
    tools = [GatedClassifier(t.spec, t.labels) if isinstance(t, TextClassifier) else t for t in build_tools(policy)]
    store.projects.create_project(policy.project, policy)
    rows = load_csv(dataset_path("sms_spam.csv"))[:items]
    for start in range(0, len(rows), 500):
        store.items.ingest(policy.project, [r.item for r in rows[start:start + 500]])
    labeler = BatchLabeler(policy, tools, seed=0)
    worker = ProjectWorker(store, policy.project, labeler, name="test", batch_size=64, retrain_lag=lag)
    return worker, {r.item.key: r.label for r in rows}


async def _run(worker: ProjectWorker, truth: dict[str, str]) -> BatchResult:
    """One graph run and the oracle's answers, fed to the learner (held back while a retrain is in flight)."""
    token, items = worker.claim()
    assert items, "the test stream ran out"
    outcome = await worker.run_claimed(token, items)
    assert outcome.result is not None
    worker.feed(Reviewers().answer(worker.store, worker.project, truth))
    return outcome.result


def test_a_fitted_model_decides_only_with_its_published_snapshot(store: SqlStore) -> None:
    """The service's rule (no lag): a retrain in flight holds the next batch up to ``retrain_wait`` seconds; past
    that the snapshot in force decides, and a slow fit never lets its model vote before its snapshot is published."""

    async def main() -> None:
        worker, truth = _worker(store, lag=None)
        learner = worker.labeler.learner
        GatedClassifier.gate.set()
        while learner.snapshot.threshold is None:  # until a certificate is in force (before it, a run waits)
            await worker.pick_up(now=True)
            await _run(worker, truth)
        await worker.pick_up(now=True)
        GatedClassifier.gate.clear()
        while worker.training is None:  # until a retrain starts: its fits wait at the gate
            await _run(worker, truth)
        old = learner.snapshot
        held = len(worker.backlog)
        worker.retrain_wait = GATE_SECONDS
        assert worker.holds_batches()  # the runtime claims nothing of this project while the fit runs ...
        worker.retrain_wait = 0.0
        assert not worker.holds_batches()  # ... past its wait it labels on with the snapshot in force
        assert await worker.pick_up() is None  # not finished: nothing to publish
        result = await _run(worker, truth)
        assert _voted_versions(result, "classifier") == {old.tool_versions["classifier"]}
        assert result.threshold == old.threshold and learner.snapshot is old
        assert len(worker.backlog) > held  # the answers wait for the retrain: the learner belongs to it
        GatedClassifier.gate.set()
        await asyncio.wait([worker.training.task])
        worker.retrain_wait = GATE_SECONDS
        assert not worker.holds_batches()  # finished: the next batch need not wait
        # finished but not yet picked up: the freshly fitted model still does not vote
        outcome = await worker.run_claimed(*worker.claim())
        assert outcome.result is not None
        assert _voted_versions(outcome.result, "classifier") == {old.tool_versions["classifier"]}
        infos = await worker.pick_up()
        assert infos, "the finished retrain is published between graph runs"
        new = learner.snapshot
        assert new.version > old.version and new.tool_versions["classifier"] != old.tool_versions["classifier"]
        assert worker.saved_versions >= {info.version for info in infos}
        result = await _run(worker, truth)
        assert _voted_versions(result, "classifier") == {new.tool_versions["classifier"]}
        assert result.threshold == new.threshold

    try:
        asyncio.run(main())
    finally:
        GatedClassifier.gate.set()


def test_the_replay_publishes_a_retrain_a_stated_number_of_runs_after_it_started(store: SqlStore) -> None:
    """``retrain_lag=3``: a retrain started after run k is published just before run k + 3, never earlier."""

    async def main() -> None:
        GatedClassifier.gate.set()
        worker, truth = _worker(store, lag=3)
        learner = worker.labeler.learner
        checked = 0
        while checked < 3:
            await worker.pick_up()
            before = learner.snapshot
            await _run(worker, truth)
            if worker.training is None or learner.snapshot.threshold is None:
                continue  # without a certificate the retrain is published before the next run (test below)
            started = worker.runs
            await asyncio.wait([worker.training.task])  # finished at once: still held back two runs
            for _ in range(2):
                assert await worker.pick_up() is None
                result = await _run(worker, truth)
                assert learner.snapshot is before and result.threshold == before.threshold
            assert worker.runs == started + 2
            assert await worker.pick_up() is not None and learner.snapshot.version > before.version
            checked += 1

    asyncio.run(main())


def test_without_a_certificate_the_next_run_waits_for_the_retrain_in_flight(store: SqlStore) -> None:
    """Cold start: every item would go to people, so the retrain (which may certify) is published before the next
    run, whatever the lag."""

    async def main() -> None:
        GatedClassifier.gate.set()
        worker, truth = _worker(store, lag=3)
        learner = worker.labeler.learner
        while worker.training is None:
            await _run(worker, truth)
        assert learner.snapshot.threshold is None and worker.pick_up_due()  # due at once, not 3 runs later
        before = learner.snapshot
        assert await worker.pick_up() is not None and learner.snapshot.version > before.version

    asyncio.run(main())
