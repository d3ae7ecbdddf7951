"""A drift alarm raised by the worker while a retrain certifies in its thread (the service runs both at once): the
retrain's certificate, computed on the segment the alarm ends, must not come back into force."""

from __future__ import annotations

import threading
from typing import Any

import pytest

from agent.learner import Learner
from agent.ports import BatchResult, CalibrationRecord, GroundTruth
from tests.agent.fixtures import CountingLearner
from tests.factories import make_decision, make_policy
from tools.base import Item

# How long the certification waits for the alarm to land inside it. With the learner's segment lock the alarm cannot
# (it waits for the lock), so this wait always runs out; without the lock the alarm lands well within it.
ALARM_WAIT_S = 3.0


def _alarm(learner: Learner) -> None:
    """Three batches mostly below the threshold in force: the label-free monitor's alarm (tests/agent/test_drift.py)."""
    policy = learner.policy
    label = policy.labels[0]
    for _ in range(3):
        ds = [make_decision(f"d{i}", "escalate" if i < 50 else "accept", label=label,
                            confidence=0.5 if i < 50 else 0.95, labels=policy.labels) for i in range(64)]
        learner.watch(BatchResult(policy.key, 0.9, {}, ds))


def test_an_alarm_during_a_retrains_certification_is_not_undone_by_it(monkeypatch: pytest.MonkeyPatch) -> None:
    policy = make_policy(certification="betting", min_calibration=10)
    label = policy.labels[0]
    keys = [f"k{i}" for i in range(400)]
    learner = Learner(policy, [CountingLearner("clf", {k: {label: 0.99} for k in keys})])
    answers = [GroundTruth(Item(k, "text"), label) for k in keys]
    learner.load(answers, [CalibrationRecord(k, 0.99, label, label, "cold_start", i + 1) for i, k in enumerate(keys)])
    assert learner.snapshot.threshold is not None  # certified on 400 right answers
    learner.monitor.set_reference(0.2)

    inside, alarmed = threading.Event(), threading.Event()
    real_update = learner.certifier.update

    def update(*args: Any, **kwargs: Any) -> Any:  # the retrain's certification, with the alarm raised meanwhile
        inside.set()
        alarmed.wait(ALARM_WAIT_S)
        return real_update(*args, **kwargs)

    def worker() -> None:
        inside.wait()
        _alarm(learner)
        alarmed.set()

    monkeypatch.setattr(learner.certifier, "update", update)
    helper = threading.Thread(target=worker)
    helper.start()
    retrained = learner.prepare_retrain()
    helper.join()
    assert learner.drift_detections == 1 and alarmed.is_set()
    learner.publish(retrained)
    # The alarm ended the segment the retrain certified on: nothing is auto-labeled until the new one certifies.
    assert learner.snapshot.threshold is None and learner.certifier.certificate is None
    assert learner.snapshot.calibration.n_calibration == 0 and learner.certifier.segment == 1  # the new segment
