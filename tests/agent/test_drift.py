"""The label-free drift monitor: quiet on a stationary share, fast on a jump; the learner pauses on an alarm, under
either certification rule."""

from __future__ import annotations

from copy import deepcopy
from dataclasses import replace

import numpy as np
import pytest

from agent.calibration import ThresholdResult
from agent.certificate import new_certificate
from agent.decisions import Evidence, verdict
from agent.drift import HOLD, EscalationMonitor, eligible_below
from agent.learner import Learner
from agent.ports import BatchResult, CalibrationRecord, GroundTruth
from tests.agent.fixtures import CountingLearner
from tests.factories import make_decision, make_policy
from tools.base import Item


def _first_alarm(monitor: EscalationMonitor, below: np.ndarray, batch: int = 64) -> int | None:
    for start in range(0, below.size, batch):
        if monitor.watch(below[start:start + batch].tolist()):
            return start
    return None


def test_quiet_on_a_stationary_share_and_fast_on_a_jump() -> None:
    rng = np.random.default_rng(3)
    runs, false_alarms, delays = 200, 0, []
    for _ in range(runs):
        monitor = EscalationMonitor()
        monitor.set_reference(0.2)
        # 5,120 items at the certificate's own share, then the share jumps to 0.7 (new classes arrive)
        stream = np.r_[rng.uniform(size=5120) < 0.2, rng.uniform(size=1024) < 0.7]
        at = _first_alarm(monitor, stream)
        if at is not None and at < 5120:
            false_alarms += 1
        elif at is not None:
            delays.append(at - 5120)
    # Average run length >= 10,000 items under H0 (share <= 0.3): 5,120 items at 0.2 rarely alarm.
    assert false_alarms <= 0.05 * runs
    assert len(delays) == runs - false_alarms and max(delays) <= 128  # within two batches of 64


@pytest.mark.parametrize("certification", ["anytime", "per_batch", "betting"])
def test_an_alarm_withdraws_the_certificate_and_pauses_auto_labeling(certification: str) -> None:
    policy = make_policy(certification=certification)
    learner = Learner(policy, [CountingLearner("clf", {})])
    cert = ThresholdResult(0.9, 200, 160, 0, 0.01)
    learner.certifier.certificate = cert  # a certificate in force, 20% of the stream below it
    learner.monitor.set_reference(0.2)
    label = policy.labels[0]

    def batch(below: int, n: int = 64) -> BatchResult:
        ds = [make_decision(f"k{i}", "escalate" if i < below else "accept", label=label,
                            confidence=0.5 if i < below else 0.95, labels=policy.labels) for i in range(n)]
        return BatchResult(policy.key, 0.9, {}, ds)

    for _ in range(20):
        learner.watch(batch(12))  # 19%: nothing happens
    assert learner.drift_detections == 0 and learner.certifier.losses == 0
    for _ in range(3):
        learner.watch(batch(50))  # 78% below: an alarm
    assert learner.drift_detections == 1 and learner.certifier.losses == 1
    assert learner.snapshot.threshold is None and learner.snapshot.drift and learner.snapshot.audit_rate == 1.0
    assert eligible_below(batch(3, 4).decisions, 0.9, set()) == [True, True, True, False]
    assert eligible_below(batch(3, 4).decisions, 0.9, {label}) == []


def test_a_kept_certificate_is_not_new_to_the_monitor() -> None:
    # per_batch recounts a kept threshold on every window: the monitor's statistic must go on, not restart each batch
    held = ThresholdResult(0.9, 200, 160, 0, 0.01)
    assert not new_certificate(held, ThresholdResult(0.9, 260, 210, 1, 0.02))  # the same threshold, recounted
    assert not new_certificate(held, held) and not new_certificate(held, None)
    assert new_certificate(None, held) and new_certificate(held, ThresholdResult(0.8, 260, 230, 2, 0.03))


def _replayed(monitor: EscalationMonitor, batch: list[bool]) -> tuple[int | None, list[float]]:
    """Feed a copy item by item: where it alarms, and the statistic after each item up to there."""
    copy, stats = deepcopy(monitor), []
    for i, x in enumerate(batch):
        if copy.watch([x]):
            return i, stats
        stats.append(copy.state().statistic)
    return None, stats


def test_plan_stops_no_later_than_the_alarm_and_holds_from_a_plausible_change_point() -> None:
    rng = np.random.default_rng(14)
    alarms = earlier = 0
    for _ in range(60):
        monitor = EscalationMonitor()
        monitor.set_reference(0.2)
        monitor.watch((rng.uniform(size=300) < 0.2).tolist())  # history past a live block: the statistic is not zero
        share = rng.uniform(0.2, 0.9)
        batch = np.r_[rng.uniform(size=60) < 0.2, rng.uniform(size=196) < share].tolist()  # a change at item 60
        before = monitor.state()
        k, held = monitor.plan(batch)
        assert monitor.state() == before  # asking changes nothing
        at, stats = _replayed(monitor, batch)
        assert (k is None) == (at is None)
        if k is not None and at is not None:
            alarms += 1
            assert k <= at and all(held[k:])  # nothing from the change point on is auto-labeled
            earlier += k < at
        # every item after which the statistic is at HOLD waits, and so does the excursion that led there
        assert all(held[i] for i, w in enumerate(stats) if w >= HOLD)
    assert alarms >= 20 and earlier >= 0.9 * alarms  # not vacuous: the stop comes before the crossing item


def test_plan_holds_from_the_batch_start_when_the_evidence_began_before_it() -> None:
    monitor = EscalationMonitor()
    monitor.set_reference(0.2)
    assert not monitor.watch([True] * 6) and monitor.state().statistic > HOLD  # evidence from an earlier batch
    k, held = monitor.plan([False] * 3 + [True] * 40)
    assert held[:3] == [True] * 3  # the items above the threshold right after it wait too
    assert k == 0 and all(held)  # the alarm comes in this batch; the change may have come before it


def test_the_bound_follows_a_live_share_lower_than_the_certificates() -> None:
    # out-of-fold confidences put 60% below the threshold, the live stream 15%: a rise to 55% is a shift
    rng = np.random.default_rng(16)
    runs, false_alarms, delays = 100, 0, []
    for _ in range(runs):
        monitor = EscalationMonitor()
        monitor.set_reference(0.6)
        at = _first_alarm(monitor, np.r_[rng.uniform(size=2048) < 0.15, rng.uniform(size=512) < 0.55])
        if at is not None and at < 2048:
            false_alarms += 1
        elif at is not None:
            delays.append(at - 2048)
    assert false_alarms <= 0.05 * runs
    assert len(delays) >= 0.95 * runs and max(delays) <= 128  # with the certificate's bound (0.7) it never alarms


def test_held_items_are_escalated_not_calibrated() -> None:
    e = Evidence(label="a", confidence=0.97, voted=True, always_reviewed=False, flagged_by=None, audit_draw=False,
                 held=True)
    v = verdict(e, 0.9)
    assert v.action == "escalate" and v.review_kind == "escalation"  # selected by the monitor: not calibration data
    assert verdict(replace(e, held=False), 0.9).action == "accept"


def _calibrated(learner: Learner, n: int, label: str) -> None:
    """``n`` cold-start calibration items another worker decided (stored records), all right at confidence 0.99."""
    answers = [GroundTruth(Item(f"c{i}", text="x"), label) for i in range(n)]
    known = {a.item.key: CalibrationRecord(a.item.key, 0.99, label, label, "cold_start", i)
             for i, a in enumerate(answers)}
    learner.observe(answers, known)


def test_no_certificate_renewal_while_the_monitor_holds() -> None:
    policy = make_policy(certification="anytime", min_calibration=10)
    label = policy.labels[0]
    runs = {}
    for holding in (False, True):
        learner = Learner(policy, [CountingLearner("clf", {})])
        cert = ThresholdResult(0.9, 200, 160, 0, 0.01)
        learner.certifier.certificate = cert
        learner.monitor.set_reference(0.2)
        if holding:  # a batch mostly below the threshold: evidence of a rise, short of an alarm
            below = [True] * 6
            assert not learner.monitor.watch(below) and learner.monitor.holding
        _calibrated(learner, learner.certifier.next_size + 5, label)  # a checkpoint is due
        learner.recalibrate()
        runs[holding] = (learner.certifier.tests, learner.snapshot.calibration)
    assert runs[False][0] == 1 and runs[False][1] is not cert  # not holding: the checkpoint tested and renewed
    assert runs[True][0] == 0 and runs[True][1] is cert  # holding: the certificate in force stays, no test spent
