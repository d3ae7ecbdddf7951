"""The certificate as the worker runs it: re-tested after every batch, on synthetic i.i.d. streams.

Each synthetic scorer has a known error curve, so the true error of any threshold is known. A run feeds a
growing calibration set to :class:`Certifier` after every batch, exactly as ``Learner.recalibrate`` does
(32 calibration items per batch while nothing is certified, as in cold start, then 6 per batch, as audits);
the run fails if any certificate in force at some point has true error above alpha. The share of failing
runs must be at most delta plus Monte Carlo error (one-sided 99%: 2.33 standard errors of a proportion delta).
The same streams, re-tested with the single-test rule after every batch, fail far more often than delta:
the test can tell the two apart.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pytest

from agent.calibration import ThresholdResult, choose_threshold
from agent.certificate import Certifier, spent_level

ALPHA, DELTA = 0.05, 0.05
HORIZON = 2500  # calibration items per run
REPS = 1000


@dataclass(frozen=True)
class Scorer:
    """Confidence ``c = 1 - 0.5 u^k`` with ``u ~ U(0, 1)``; P(wrong | c) = ``error(c)``."""

    name: str
    k: float
    error: Callable[[np.ndarray], np.ndarray]
    certifies: float  # the share of runs that certify something is at least this (the test is not vacuous)

    def draw(self, rng: np.random.Generator, n: int) -> tuple[np.ndarray, np.ndarray]:
        conf = 1.0 - 0.5 * rng.uniform(size=n) ** self.k
        return conf, rng.uniform(size=n) >= self.error(conf)

    def true_error(self) -> Callable[[float], float]:
        """Error rate among items with confidence >= t (cumulative mean over a fine grid of u)."""
        u = (np.arange(1_000_000) + 0.5) / 1_000_000
        mean = np.cumsum(self.error(1.0 - 0.5 * u ** self.k)) / np.arange(1, u.size + 1)

        def at(t: float) -> float:
            share = ((1.0 - t) / 0.5) ** (1.0 / self.k)  # P(c >= t)
            return float(mean[min(u.size - 1, max(0, int(share * u.size) - 1))])
        return at


SCORERS = [
    # weak: confidences spread over [0.5, 1], error above t is 0.2 (1 - t): half the stream is certifiable at 0.05
    Scorer("weak", 1.0, lambda c: 0.4 * (1.0 - c), 0.4),
    # over-confident: says 99% where it is right 97% of the time
    # (the fixed sequence starts where the stated errors say it could; here that is past the truly certifiable
    # half, so most runs certify nothing: the price of over-confidence, paid in reviews)
    Scorer("over-confident", 3.0, lambda c: np.minimum(1.0, 3.0 * (1.0 - c)), 0.1),
    # strong and calibrated, mass near 1: almost everything is certifiable
    Scorer("strong", 4.0, lambda c: 1.0 - c, 0.9),
]


def _run(scorer: Scorer, rng: np.random.Generator, certify: Callable[[np.ndarray, np.ndarray], ThresholdResult],
         true_error: Callable[[float], float]) -> tuple[bool, bool]:
    """One stream; returns (some certificate in force had true error > alpha, anything was certified)."""
    conf, ok = scorer.draw(rng, HORIZON)
    n, bad, any_cert = 0, False, False
    while n < HORIZON:
        res = certify(conf[:n], ok[:n])  # after every batch, on the calibration set so far
        if res.threshold is not None:
            any_cert = True
            bad = bad or true_error(res.threshold) > ALPHA
        n += 32 if res.threshold is None else 6
    return bad, any_cert


def _certifier_runs(scorer: Scorer, reps: int, seed: int) -> tuple[int, int]:
    rng = np.random.default_rng(seed)
    true_error = scorer.true_error()
    bad = certified = 0
    for _ in range(reps):
        cert = Certifier(ALPHA, DELTA, min_size=150)
        b, c = _run(scorer, rng, cert.update, true_error)
        bad += b
        certified += c
    return bad, certified


@pytest.mark.parametrize("scorer", SCORERS, ids=lambda s: s.name)
def test_repeated_testing_keeps_the_guarantee(scorer: Scorer) -> None:
    bad, certified = _certifier_runs(scorer, REPS, seed=14)
    mc = 2.33 * math.sqrt(DELTA * (1 - DELTA) / REPS)  # 0.016 at 1,000 runs
    assert bad / REPS <= DELTA + mc
    assert certified >= scorer.certifies * REPS


def test_the_single_test_rule_repeated_breaks_the_guarantee() -> None:
    # The rule in use before: choose_threshold at level delta after every batch. On the over-confident scorer its
    # runs certify a bad threshold far more often than delta, so the test above could fail.
    scorer = SCORERS[1]
    rng = np.random.default_rng(7)
    true_error = scorer.true_error()
    reps = 200
    bad = sum(_run(scorer, rng, lambda c, o: choose_threshold(c, o, alpha=ALPHA, delta=DELTA), true_error)[0]
              for _ in range(reps))
    assert bad / reps > DELTA + 2.33 * math.sqrt(DELTA * (1 - DELTA) / reps)


def test_spending_sums_to_delta_and_tests_are_at_counted_sizes() -> None:
    assert sum(spent_level(0.05, j) for j in range(100_000)) == pytest.approx(0.05, rel=1e-4)
    cert = Certifier(0.05, 0.05, min_size=150)
    first = cert.next_size
    assert first == 150
    conf, ok = np.linspace(1.0, 0.9, 1000), np.ones(1000, dtype=bool)
    assert cert.update(conf[:first - 1], ok[:first - 1]).threshold is None and cert.tests == 0
    res = cert.update(conf[:first + 3], ok[:first + 3])  # tested on exactly the first `first` items
    assert cert.tests == 1 and res.n_calibration == first and res.threshold == pytest.approx(conf[first - 1])
    assert cert.next_size == math.ceil(1.5 * first)
    res2 = cert.update(conf[:1000], ok[:1000])  # several checkpoints passed in one batch: one test, at the last
    assert cert.tests == 2 and res2.n_calibration <= 1000 < math.ceil(1.5 * res2.n_calibration)


def test_a_failed_checkpoint_keeps_the_certificate_and_only_reset_loses_it() -> None:
    cert = Certifier(0.05, 0.05)
    first_size = cert.next_size  # the fewest items that can pass at delta / 2
    conf = np.linspace(1.0, 0.9, 2000)
    ok = np.ones(2000, dtype=bool)
    first = cert.update(conf[:first_size], ok[:first_size])
    assert first.threshold is not None
    ok[:400] = False  # the next checkpoint's sample would certify nothing
    assert cert.update(conf[:400], ok[:400]) == first and cert.tests == 2
    assert cert.losses == 0
    cert.reset()
    assert cert.threshold is None and cert.losses == 1
    assert cert.next_size > first_size  # the test index goes on: the next level is smaller and needs more items


def test_a_rescored_checkpoint_sample_is_tested_again_at_its_own_level() -> None:
    # The models improve between checkpoints: the first checkpoint's sample, rescored, can certify a lower threshold
    # at the first checkpoint's level, without waiting for the next checkpoint (and without spending more).
    cert = Certifier(0.05, 0.05, min_size=150)
    size = cert.next_size
    ok = np.ones(size + 40, dtype=bool)
    ok[size // 2:size] = False  # the lower half of the first sample is wrong under the first scorer
    conf = np.linspace(1.0, 0.5, size + 40)
    first = cert.update(conf, ok)
    assert first.threshold is not None and cert.tests == 1
    rescored_ok = np.ones(size + 40, dtype=bool)  # the retrained models get the same items right
    second = cert.update(conf, rescored_ok)
    assert second.threshold is not None and second.threshold < first.threshold
    assert cert.tests == 1 and cert.certified_at_test == 0  # same checkpoint, same level: nothing more spent
    assert second.n_calibration == size  # tested on the checkpoint's sample, not on the items since
    assert cert.update(conf, ok) == second  # a rescoring that certifies higher does not raise the threshold


def test_the_checkpoints_survive_a_restore() -> None:
    cert = Certifier(0.05, 0.05, min_size=150)
    conf, ok = np.linspace(1.0, 0.9, 400), np.ones(400, dtype=bool)
    cert.update(conf[:160], ok[:160])
    cert.update(conf[:300], ok[:300])
    again = Certifier(0.05, 0.05, min_size=150)
    again.restore(cert.state(), cert.certificate)
    assert again.checkpoints == cert.checkpoints and len(again.checkpoints) == 2
    assert again.update(conf[:310], ok[:310]) == cert.update(conf[:310], ok[:310])
