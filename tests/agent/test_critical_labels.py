"""``critical_labels``: the certificate also bounds the error among auto-labeled items of a critical (true) label.

Synthetic i.i.d. calibration streams where a critical label (30% of items) is much harder than the rest: a
threshold certified on all items together leaves the critical label's error far above alpha, so a rule that
ignores the label fails almost always; with the label's mask the fixed sequence is an intersection-union test
(``agent/calibration.py``) and fails in at most a share ``delta`` of runs (plus Monte Carlo error). The true error
above a threshold is known in closed form, so "fails" needs no estimate.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from agent.betting import BettingCertifier
from agent.calibration import choose_threshold, recount
from agent.certificate import Certifier, PerBatchCertifier

ALPHA, DELTA = 0.1, 0.1
SHARE, HARD, EASY = 0.3, 1.0, 0.1  # critical share; P(wrong | conf c) = HARD (1 - c) for it, EASY (1 - c) else
ITEMS = 3_000
REPS = 1_000
MC = 2.33 * math.sqrt(DELTA * (1 - DELTA) / REPS)  # one-sided 99% Monte Carlo allowance: 0.022 at 1,000 runs


def _draw(rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Confidences uniform on [0.5, 1], which items carry the critical label, whether each is right."""
    conf = rng.uniform(0.5, 1.0, n)
    critical = rng.random(n) < SHARE
    ok = rng.random(n) >= np.where(critical, HARD, EASY) * (1.0 - conf)
    return conf, ok, critical


def _critical_error(threshold: float) -> float:
    """The critical label's true error at or above ``threshold`` (confidence uniform on [threshold, 1])."""
    return HARD * (1.0 - threshold) / 2.0


def _overall_error(threshold: float) -> float:
    return (SHARE * HARD + (1.0 - SHARE) * EASY) * (1.0 - threshold) / 2.0


def _wrong(threshold: float | None) -> bool:
    return threshold is not None and max(_critical_error(threshold), _overall_error(threshold)) > ALPHA


def test_one_test_with_the_critical_mask_keeps_its_level_and_without_it_fails() -> None:
    rng = np.random.default_rng(15)
    with_mask = without = certified = 0
    for _ in range(REPS):
        conf, ok, critical = _draw(rng, ITEMS)
        guarded = choose_threshold(conf, ok, alpha=ALPHA, delta=DELTA, strata=(critical,)).threshold
        plain = choose_threshold(conf, ok, alpha=ALPHA, delta=DELTA).threshold
        with_mask += _wrong(guarded)
        without += _wrong(plain)
        certified += guarded is not None
    assert with_mask / REPS <= DELTA + MC
    assert without / REPS > 0.9  # the average alone says nothing about the critical label here
    assert certified / REPS > 0.4  # and the guarded rule still certifies (about half the runs at this size)


def _through(certifier: BettingCertifier | Certifier | PerBatchCertifier, conf: np.ndarray, ok: np.ndarray,
             critical: np.ndarray) -> tuple[bool, bool]:
    """The stream through a rule as the learner calls it, after every batch of 100 calibration items: (some
    certificate in force was wrong, anything was certified)."""
    bad = certified = False
    for n in range(100, conf.shape[0] + 1, 100):
        threshold = certifier.update(conf[:n], ok[:n], (critical[:n],)).threshold
        certified = certified or threshold is not None
        bad = bad or _wrong(threshold)
    return bad, certified


@pytest.mark.parametrize(("rule", "certifies"), [("betting", 0.9), ("anytime", 0.08)])
def test_the_run_valid_rules_keep_the_critical_guarantee_after_every_batch(rule: str, certifies: float) -> None:
    """60 updates per run on 6,000 calibration items. Measured on 100 runs: betting certified on all of them,
    the checkpoint rule (anytime) on 17% (its levels shrink with every checkpoint)."""
    rng = np.random.default_rng(16)
    reps = REPS // 4
    runs = []
    for _ in range(reps):
        certifier = (BettingCertifier(ALPHA, DELTA, min_size=150, window=4_000) if rule == "betting"
                     else Certifier(ALPHA, DELTA, min_size=150))
        runs.append(_through(certifier, *_draw(rng, 2 * ITEMS)))
    allowance = 2.33 * math.sqrt(DELTA * (1 - DELTA) / reps)  # 0.044 at 250 runs
    assert sum(bad for bad, _ in runs) / reps <= DELTA + allowance
    assert sum(certified for _, certified in runs) / reps > certifies


def test_a_kept_certificate_is_dropped_when_the_window_shows_the_critical_label_wrong() -> None:
    rng = np.random.default_rng(17)
    conf, ok, critical = _draw(rng, ITEMS)
    held = choose_threshold(conf, ok, alpha=ALPHA, delta=DELTA)  # certified on the average only
    assert held.threshold is not None and _critical_error(held.threshold) > 2 * ALPHA
    assert recount(held, conf, ok, alpha=ALPHA, delta=DELTA) is not None
    assert recount(held, conf, ok, alpha=ALPHA, delta=DELTA, strata=(critical,)) is None


def test_a_mask_of_another_length_is_refused() -> None:
    conf, ok, critical = _draw(np.random.default_rng(0), 500)
    with pytest.raises(ValueError, match="one entry per calibration item"):
        choose_threshold(conf, ok, alpha=ALPHA, delta=DELTA, strata=(critical[:-1],))


def test_a_rare_critical_label_holds_the_certificate_back_until_it_has_enough_items() -> None:
    """Fewer than ``n_0`` critical items above every candidate: nothing can be certified, however good the rest."""
    rng = np.random.default_rng(3)
    conf = rng.uniform(0.9, 1.0, 2_000)
    ok = np.ones(2_000, dtype=bool)
    rare = np.zeros(2_000, dtype=bool)
    rare[:20] = True  # 20 items: under the 22 error-free items alpha = delta = 0.1 needs
    assert choose_threshold(conf, ok, alpha=ALPHA, delta=DELTA).threshold is not None
    assert choose_threshold(conf, ok, alpha=ALPHA, delta=DELTA, strata=(rare,)).threshold is None
    rare[:40] = True
    assert choose_threshold(conf, ok, alpha=ALPHA, delta=DELTA, strata=(rare,)).threshold is not None


def test_per_batch_tests_the_critical_label_on_its_window() -> None:
    conf, ok, critical = _draw(np.random.default_rng(5), ITEMS)
    certifier = PerBatchCertifier(ALPHA, DELTA, min_size=150, window=2_000)
    result = certifier.update(conf, ok, (critical,))
    expected = choose_threshold(conf[-2_000:], ok[-2_000:], alpha=ALPHA, delta=DELTA, strata=(critical[-2_000:],))
    assert result.threshold == expected.threshold
    assert result.threshold != choose_threshold(conf[-2_000:], ok[-2_000:], alpha=ALPHA, delta=DELTA).threshold


def _labeled(critical: list[str]) -> tuple[int, float, float]:
    """A 3,000-item stream through the learner and graph (a table voter, answers after every batch): ham is easy,
    spam (30%) is wrong with probability 2 (1 - c) at stated confidence c. Returns (spam items auto-labeled, their
    precision, the precision of every auto label)."""
    import asyncio

    from agent.ports import GroundTruth
    from agent.runner import BatchLabeler
    from tests.agent.fixtures import CountingLearner
    from tests.factories import make_items, make_policy

    rng = np.random.default_rng(7)
    items = make_items(3_000)
    truth = {it.key: ("spam" if rng.random() < SHARE else "ham") for it in items}
    table = {}
    for it in items:
        c = rng.uniform(0.8, 1.0)
        wrong = rng.random() < (2.0 * (1.0 - c) if truth[it.key] == "spam" else 0.02)
        said = ("ham" if truth[it.key] == "spam" else "spam") if wrong else truth[it.key]
        table[it.key] = {said: c, ("spam" if said == "ham" else "ham"): 1.0 - c}
    # per_batch: its Clopper-Pearson counts certify the critical label within these 3,000 items; betting needs
    # about 1.5 times its error-free items (test_the_run_valid_rules_keep_the_critical_guarantee_after_every_batch
    # tests the critical label under betting on its own)
    policy = make_policy(tools=[{"name": "clf", "kind": "text_classifier"}], min_calibration=60, target_precision=0.9,
                         audit_rate=0.05, critical_labels=critical, certification="per_batch")
    labeler = BatchLabeler(policy, [CountingLearner("clf", table)], seed=1)
    auto: list[tuple[str, str]] = []
    for s in range(0, len(items), 50):
        batch = items[s:s + 50]
        result = asyncio.run(labeler.run_batch(batch))
        auto += [(d.label or "", truth[d.key]) for d in result.decisions if d.action == "accept"]
        labeler.learner.observe([GroundTruth(it, truth[d.key]) for it, d in zip(batch, result.decisions, strict=True)
                                 if d.action != "accept"])
        labeler.learner.recalibrate()
    spam = [said == true for said, true in auto if true == "spam"]
    return len(spam), float(np.mean(spam)), float(np.mean([said == true for said, true in auto]))


def test_the_learner_certifies_the_critical_label_on_its_own() -> None:
    n_plain, spam_plain, overall_plain = _labeled([])
    n_guarded, spam_guarded, overall_guarded = _labeled(["spam"])
    assert overall_plain >= 0.9 and spam_plain < 0.88  # the average holds, the critical label's items do not
    assert n_guarded >= 30 and spam_guarded >= 0.9 and overall_guarded >= 0.9  # measured: 41 spam items, 0.976
    assert n_plain > 10 * n_guarded  # the price: the spam items' own test needs its own calibration items (821 here)
