"""How many items a worker claims: small while every item goes to a human or the agent knows little."""

from __future__ import annotations

import dataclasses

from agent.calibration import ThresholdResult
from agent.ports import GroundTruth
from agent.runner import BatchLabeler
from service.runtime.cycle import ProjectWorker
from tests.agent.fixtures import CountingLearner
from tests.factories import make_items, make_policy


def _worker(answers: int) -> ProjectWorker:
    policy = make_policy(tools=[{"name": "clf", "kind": "text_classifier"}])
    labeler = BatchLabeler(policy, [CountingLearner("clf", {})], seed=0)
    labeler.learner.observe([GroundTruth(it, "ham") for it in make_items(answers)])
    return ProjectWorker(store=None, project="p", labeler=labeler, batch_size=256)  # type: ignore[arg-type]


def _certify(worker: ProjectWorker) -> None:
    learner = worker.labeler.learner
    learner.snapshot = dataclasses.replace(learner.snapshot, calibration=ThresholdResult(0.9, 300, 250, 1, 0.01))


def test_without_a_threshold_the_worker_claims_the_minimum_whatever_it_learned() -> None:
    worker = _worker(400)
    assert worker.labeler.learner.snapshot.threshold is None
    assert worker.claim_size() == 32


def test_with_a_threshold_the_claim_grows_with_the_ground_truth() -> None:
    worker = _worker(100)
    _certify(worker)
    assert worker.claim_size() == 50  # half the answers
    worker = _worker(1000)
    _certify(worker)
    assert worker.claim_size() == 256  # capped at the batch size
