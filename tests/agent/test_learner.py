"""The learner: retrain schedule, calibration from i.i.d. reviews, drift, the pool's weights."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from agent.certificate import fewest_to_certify
from agent.learner import Learner
from agent.ports import GroundTruth
from agent.runner import BatchLabeler
from tests.agent.fixtures import CountingLearner, TableTool
from tests.factories import make_items, make_policy


def policy(**over):  # type: ignore[no-untyped-def]
    fields = {"tools": [{"name": "clf", "kind": "text_classifier"}], "min_calibration": 60, "retrain_every": 50,
              "target_precision": 0.9, "audit_rate": 0.05}
    fields.update(over)
    return make_policy(**fields)


def test_retrain_schedule_is_dense_early_and_capped_later() -> None:
    tool = CountingLearner("clf", {})
    learner = Learner(policy(), [tool])
    items = make_items(600)
    steps = []
    for i, item in enumerate(items):
        learner.observe([GroundTruth(item, "ham" if i % 2 else "spam")])
        if learner.retrain_due():
            learner.retrain()
            steps.append(learner.n_ground_truth)
    gaps = np.diff(steps)
    assert steps[0] == 5  # the first answers matter most
    assert gaps[:5].max() <= 10
    assert gaps.max() == 50  # never more than retrain_every
    assert tool.fits[-1] == steps[-1]


def _run_stream(lab: BatchLabeler, items, truth) -> list:  # type: ignore[no-untyped-def]
    decisions = []
    for s in range(0, len(items), 50):
        result = asyncio.run(lab.run_batch(items[s:s + 50]))
        decisions.extend(result.decisions)
        answers = [GroundTruth(it, truth[d.key]) for it, d in zip(items[s:s + 50], result.decisions, strict=True)
                   if d.action != "accept"]
        lab.learner.observe(answers)
        if lab.learner.retrain_due():
            lab.learner.retrain()
        else:
            lab.learner.recalibrate()
    return decisions


def test_cold_start_then_threshold_then_auto_labels() -> None:
    items = make_items(1500)
    rng = np.random.default_rng(0)
    truth = {it.key: ("ham" if rng.random() < 0.7 else "spam") for it in items}
    # A voter that is right 97% of the time with confidence 0.95.
    table = {}
    for it in items:
        right = rng.random() < 0.97
        lab = truth[it.key] if right else ("spam" if truth[it.key] == "ham" else "ham")
        table[it.key] = {lab: 0.95, ("spam" if lab == "ham" else "ham"): 0.05}
    tool = CountingLearner("clf", table)
    lab = BatchLabeler(policy(), [tool], seed=1)
    decisions = _run_stream(lab, items, truth)
    kinds = [d.review_kind for d in decisions]
    first_accept = next(i for i, d in enumerate(decisions) if d.action == "accept")
    assert set(kinds[:first_accept]) == {"cold_start"}
    assert first_accept >= 60  # min_calibration
    auto = [d for d in decisions if d.action == "accept"]
    assert len(auto) > 0.6 * len(items)
    precision = np.mean([d.label == truth[d.key] for d in auto])
    assert precision >= 0.9
    audits = [d for d in decisions[first_accept:] if d.action == "audit"]
    assert 0.01 * len(items) < len(audits) < 0.12 * len(items)


def test_useless_voter_weight_falls_toward_zero() -> None:
    items = make_items(800)
    rng = np.random.default_rng(3)
    truth = {it.key: ("ham" if rng.random() < 0.5 else "spam") for it in items}
    good = {it.key: {truth[it.key]: 0.9, ("spam" if truth[it.key] == "ham" else "ham"): 0.1} for it in items}
    noise = {}
    for it in items:
        lab = "ham" if rng.random() < 0.5 else "spam"
        noise[it.key] = {lab: 0.9, ("spam" if lab == "ham" else "ham"): 0.1}
    p = policy(tools=[{"name": "good", "kind": "text_classifier"}, {"name": "noise", "kind": "text_classifier"}],
               min_calibration=2000)  # stay in cold start: every item is reviewed
    lab = BatchLabeler(p, [CountingLearner("good", good), TableTool("noise", noise)], seed=0)
    _run_stream(lab, items, truth)
    agg = lab.learner.snapshot.aggregator
    assert agg.weight_of("noise") < 0.1
    assert agg.weight_of("good") > 0.5
    assert agg.metrics["majority_vote_accuracy"] < agg.metrics["accuracy"]


def test_drift_restarts_calibration() -> None:
    tool = CountingLearner("clf", {})
    learner = Learner(policy(min_calibration=60), [tool])
    items = make_items(400)
    # 300 i.i.d. reviews where the agent was right, then 100 audits where it was wrong half the time.
    from agent.state import ReviewTrace
    from tools.base import Batch

    def feed(batch_items, kinds, correct):  # type: ignore[no-untyped-def]
        n = len(batch_items)
        trace = ReviewTrace(Batch(batch_items), np.log(np.full((n, 1, 2), 0.5)), np.ones((n, 1), bool),
                            np.full(n, 0.97), ["ham"] * n, kinds, np.ones(n, bool))
        learner.remember(trace)
        learner.observe([GroundTruth(it, "ham" if ok else "spam") for it, ok in zip(batch_items, correct,
                                                                                     strict=True)])
        learner.recalibrate()

    feed(items[:300], ["cold_start"] * 300, [True] * 300)
    assert learner.snapshot.threshold is not None and not learner.snapshot.drift
    feed(items[300:], ["audit"] * 100, [i % 2 == 0 for i in range(100)])
    assert learner.snapshot.drift
    assert learner.snapshot.threshold is None  # recent data took over and does not support a threshold
    assert learner.snapshot.audit_rate == 1.0


def _cold_start(learner, batch_items, conf, correct):  # type: ignore[no-untyped-def]
    """Cold-start reviews of ``batch_items`` (suggested "ham" at ``conf``, right where ``correct``); recalibrate."""
    from agent.state import ReviewTrace
    from tools.base import Batch

    n = len(batch_items)
    trace = ReviewTrace(Batch(batch_items), np.log(np.full((n, 1, 2), 0.5)), np.ones((n, 1), bool),
                        np.asarray(conf), ["ham"] * n, ["cold_start"] * n, np.zeros(n, bool))
    learner.remember(trace)
    learner.observe([GroundTruth(it, "ham" if ok else "spam") for it, ok in zip(batch_items, correct, strict=True)])
    return learner.recalibrate()


def _confident_then_unsure(learner, items):  # type: ignore[no-untyped-def]
    """Cold-start reviews of 200 items: three confident (0.97) and right, then one unsure (0.6, every other one
    wrong), repeated."""
    conf = [0.97, 0.97, 0.97, 0.6] * 50
    return _cold_start(learner, items, conf, [c > 0.9 or i % 8 == 3 for i, c in enumerate(conf)])


def test_audits_rise_with_the_share_escalated_while_the_calibration_set_is_small() -> None:
    learner = Learner(policy(min_calibration=60, audit_rate=0.01, certification="per_batch"),
                      [CountingLearner("clf", {})])
    items = make_items(400)

    def feed(batch_items, conf, correct):  # type: ignore[no-untyped-def]
        return _cold_start(learner, batch_items, conf, correct)

    # 150 confident and right, 50 unsure and half wrong: the certificate covers the 150 (alpha 0.1).
    snap = feed(items[:200], [0.97] * 150 + [0.6] * 50, [True] * 150 + [i % 2 == 0 for i in range(50)])
    assert snap.calibration.n_above == 150
    assert snap.audit_rate == 0.5 * 50 / 200  # AUDIT_PER_ESCALATION times the share left to humans
    # 8 x 29 = 232 calibration items (the fewest that can certify at alpha 0.1 is 29): the policy's rate again.
    snap = feed(items[200:300], [0.97] * 100, [True] * 100)
    assert snap.calibration.threshold is not None and snap.audit_rate == 0.01


def test_audits_rise_with_the_share_escalated_while_the_calibration_set_is_small_anytime() -> None:
    learner = Learner(policy(min_calibration=60, audit_rate=0.01, certification="anytime"),
                      [CountingLearner("clf", {})])
    items = make_items(400)
    # The first checkpoint reached with 200 calibration items is 135 (60, 90, 135; agent/certificate.py): 102
    # confident, 33 unsure.
    snap = _confident_then_unsure(learner, items[:200])
    assert snap.calibration.n_calibration == 135 and snap.calibration.n_above == 102
    assert snap.audit_rate == pytest.approx(0.5 * 33 / 135)  # AUDIT_PER_ESCALATION times the share left to humans
    # 400 items: the checkpoint at 305 (203, 305), over 8 x 29 = 232 (the fewest that can certify at alpha 0.1
    # is 29): the policy's rate again.
    snap = _cold_start(learner, items[200:400], [0.97] * 200, [True] * 200)
    assert snap.calibration.n_calibration == 305
    assert snap.calibration.threshold is not None and snap.audit_rate == 0.01


def test_audits_rise_with_the_share_escalated_while_the_calibration_set_is_small_betting() -> None:
    learner = Learner(policy(min_calibration=60, audit_rate=0.01), [CountingLearner("clf", {})])  # the default rule
    assert learner.policy.certification == "betting"
    items = make_items(300)
    # The unsure items err at 50%, so no candidate at or below 0.6 can be certified; the 150 confident ones certify
    # a candidate above it.
    snap = _confident_then_unsure(learner, items[:200])
    assert snap.calibration.threshold is not None and snap.calibration.threshold > 0.6
    assert snap.calibration.n_above == 150
    assert snap.audit_rate == pytest.approx(0.5 * 50 / 200)  # AUDIT_PER_ESCALATION times the share left to humans
    # 8 x 29 = 232 calibration items (one Clopper-Pearson test's fewest at alpha 0.1, the scale for every rule, though
    # betting itself needs 44): the policy's rate again.
    assert fewest_to_certify(learner.policy) == 44
    snap = _cold_start(learner, items[200:220], [0.97] * 20, [True] * 20)
    assert snap.calibration.n_calibration == 220 and snap.audit_rate > 0.01
    snap = _cold_start(learner, items[220:300], [0.97] * 80, [True] * 80)
    assert snap.calibration.threshold is not None and snap.audit_rate == 0.01


def _review(learner: Learner, items, kinds, answers, **observe) -> None:  # type: ignore[no-untyped-def]
    """Items sent to review (the agent said ham with 0.97, would have accepted), then their answers."""
    from agent.state import ReviewTrace
    from tools.base import Batch

    n = len(items)
    learner.remember(ReviewTrace(Batch(items), np.log(np.full((n, 1, 2), 0.5)), np.ones((n, 1), bool),
                                 np.full(n, 0.97), ["ham"] * n, kinds, np.ones(n, bool)))
    learner.observe([GroundTruth(it, lab) for it, lab in zip(items, answers, strict=True)], **observe)


def _calibration_state(learner: Learner) -> tuple:  # type: ignore[type-arg]
    return (tuple(learner._iid_rows), tuple(learner._iid_conf), tuple(learner._iid_pred), tuple(learner._iid_y),
            tuple(learner._audits), learner._calibration_since)


def test_a_correction_trains_but_leaves_the_calibration_set_unchanged() -> None:
    from agent.ports import CalibrationRecord

    tool = CountingLearner("clf", {})
    learner = Learner(policy(min_calibration=60), [tool])
    items = make_items(300)
    _review(learner, items[:200], ["cold_start"] * 200, ["ham"] * 200)
    _review(learner, items[200:250], ["audit"] * 50, ["ham"] * 49 + ["spam"])
    learner.recalibrate()
    before, certified = _calibration_state(learner), learner.snapshot.calibration
    assert certified.threshold is not None and len(before[0]) == 250
    n = learner.n_ground_truth
    # items[260] was auto-labeled (never reviewed); items[0] and items[210] are calibration items (cold start and
    # audit) whose reviewed label is corrected. The stored calibration records a worker would pass are ignored.
    known = {it.key: CalibrationRecord(it.key, 0.97, "ham", "ham", "cold_start", 1) for it in items}
    learner.observe([GroundTruth(items[260], "spam", correction=True), GroundTruth(items[0], "spam", correction=True),
                     GroundTruth(items[210], "spam", correction=True)], known)
    assert learner.n_ground_truth == n + 1, "the auto-labeled item is new training data; the others are replaced"
    data = learner.training_set()
    assert len(data) == n + 1
    y_of = {it.key: data.labels[int(y)] for it, y in zip(data.batch.items, data.y, strict=True)}
    assert (y_of[items[260].key], y_of[items[0].key], y_of[items[210].key]) == ("spam", "spam", "spam")
    assert sum(1 for it in data.batch.items if it.key == items[0].key) == 1
    assert _calibration_state(learner) == before, "no calibration item, truth or audit outcome changed"
    learner.recalibrate()
    assert learner.snapshot.calibration == certified
    learner.retrain()
    assert tool.fits[-1] == n + 1, "the retrained tools see the correction"
    # the same answer as a review (not a correction) would have entered the calibration set
    _review(learner, items[270:271], ["audit"], ["spam"])
    assert len(learner._iid_rows) == len(before[0]) + 1


def test_a_restored_learner_keeps_the_reviewed_truth_of_a_corrected_calibration_item() -> None:
    from agent.ports import CalibrationRecord

    items = make_items(200)
    table = {it.key: {"ham": 0.95, "spam": 0.05} for it in items}
    calibration = [CalibrationRecord(it.key, 0.97, "ham", "ham", "cold_start", i + 1) for i, it in enumerate(items)]
    plain = Learner(policy(min_calibration=60), [CountingLearner("clf", table)])
    plain.load([GroundTruth(it, "ham") for it in items], calibration)
    restored = Learner(policy(min_calibration=60), [CountingLearner("clf", table)])
    answers = [GroundTruth(it, "ham") for it in items[1:]] + [GroundTruth(items[0], "spam", correction=True)]
    restored.load(answers, calibration)

    def truths(learner: Learner) -> dict[str, int]:
        return {learner._gt_keys[r]: y for r, y in zip(learner._iid_rows, learner._iid_y, strict=True)}

    assert truths(restored) == truths(plain) and len(truths(plain)) == 200
    assert restored.snapshot.calibration == plain.snapshot.calibration
    data = restored.training_set()
    assert data.labels[int(data.y[restored._gt_keys.index(items[0].key)])] == "spam"


def test_items_that_can_never_be_auto_labeled_stay_out_of_the_calibration_set() -> None:
    # Cold-start answers for items the agent labels "spam" (always reviewed) are not certified: no threshold ever
    # applies to them, so their errors must not move the certificate. Items without a vote stay (rescoring by the
    # fold models may give them one; until then they count as errors).
    from agent.state import ReviewTrace
    from tools.base import Batch

    learner = Learner(policy(always_review=["spam"]), [CountingLearner("clf", {})])
    items = make_items(30)
    predicted = ["ham"] * 10 + ["spam"] * 10 + [None] * 10
    trace = ReviewTrace(Batch(items), np.log(np.full((30, 1, 2), 0.5)), np.ones((30, 1), bool),
                        np.full(30, 0.9), predicted, ["cold_start"] * 30, np.zeros(30, bool))
    learner.remember(trace)
    records = learner.observe([GroundTruth(it, "spam") for it in items])
    assert len(records) == 30  # every answer is still recorded and trains the models ...
    assert learner.n_ground_truth == 30
    assert learner.recalibrate().calibration.n_calibration == 20  # ... but the ten "spam" predictions do not calibrate


def test_past_the_window_cap_every_retrain_and_rescore_trains_on_a_bounded_set() -> None:
    from agent.schedule import TrainingWindow

    tool = CountingLearner("clf", {})
    window = TrainingWindow(cap=200, class_floor=10, seed=0)
    learner = Learner(policy(min_calibration=60), [tool], window=window)
    items = make_items(2_000)
    for start in range(0, 2_000, 100):
        # Cold-start answers: calibration data, but not audits of would-be auto labels, so no drift check fires
        # (a detected drift restarts the window: tests/agent/test_schedule.py).
        _review(learner, items[start:start + 100], ["cold_start"] * 100,
                ["ham" if i % 3 else "spam" for i in range(100)])
        learner.retrain(force_rescore=True)
    assert learner.n_ground_truth == 2_000 and learner.rescores > 0 and learner.drift_detections == 0
    assert tool.fits[0] == 100 and tool.fits[1] == 200  # every label trains up to the cap
    bound = window.bound(2)
    assert max(tool.fits) <= bound and tool.fits[-1] >= 200
    forks = [m for m in learner._fold_tools.values() if isinstance(m, CountingLearner)]
    assert forks and max(f for m in forks for f in m.fits) <= bound  # the fold models too


def test_a_detected_drift_restarts_the_training_window() -> None:
    from agent.schedule import TrainingWindow

    tool = CountingLearner("clf", {})
    learner = Learner(policy(min_calibration=60), [tool], window=TrainingWindow(cap=10_000, class_floor=10, seed=0))
    items = make_items(200)
    # Audits of would-be auto labels ("ham" at 0.97), a third of them wrong: the audit check detects drift.
    _review(learner, items[:100], ["audit"] * 100, ["ham" if i % 3 else "spam" for i in range(100)])
    learner.retrain()
    assert learner.drift_detections == 1 and tool.fits[-1] == 100
    _review(learner, items[100:], ["cold_start"] * 100, ["ham" if i % 3 else "spam" for i in range(100)])
    learner.retrain()
    # Under the cap, but the 100 rows from before the alarm train only as class floors (the ten most recent of each
    # class, and by now those are all new rows): 100 rows, not 200.
    assert learner.n_ground_truth == 200 and tool.fits[-1] == 100


def test_a_released_sample_trains_but_does_not_calibrate() -> None:
    """i20: a cold-start sample released into the queue (a certificate came before a reviewer) is an escalation
    from then on: its answer, if a human still gives it, is training data, not a calibration item."""
    from agent.state import ReviewTrace
    from tools.base import Batch

    learner = Learner(policy(min_calibration=60), [CountingLearner("clf", {})])
    items = make_items(30)
    learner.remember(ReviewTrace(Batch(items), np.log(np.full((30, 1, 2), 0.5)), np.ones((30, 1), bool),
                                 np.full(30, 0.97), ["ham"] * 30, ["cold_start"] * 30, np.ones(30, bool)))
    assert learner.pending.outstanding("cold_start") == 30
    learner.pending.release(it.key for it in items[10:])
    learner.pending.release(["never-sent"])  # a key this learner did not send: nothing to release
    assert (learner.pending.outstanding("cold_start"), learner.pending.outstanding("escalation")) == (10, 20)
    assert learner.pending.kind(items[0].key) == "cold_start" and learner.pending.kind("never-sent") is None
    learner.observe([GroundTruth(it, "ham") for it in items])
    assert learner.n_ground_truth == 30 and len(learner._iid_rows) == 10, "only the unreleased samples calibrate"
    assert not learner.pending
