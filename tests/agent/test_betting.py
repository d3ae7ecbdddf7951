"""``certification: betting``: one test supermartingale per candidate threshold, fixed sequence across them.

The statistical test runs :class:`BettingCertifier` exactly as the learner calls it (after every batch, on the
calibration segment so far) on the synthetic i.i.d. streams of ``test_certificate``: 1,000 runs per scorer, the
share of runs in which some certificate in force had true error above alpha must be at most delta plus Monte Carlo
error. On the same streams it certifies a larger share of the stream than the checkpoint rule (the price of
validity is lower), which the test states too.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.integrate import quad

from agent.betting import BettingCertifier, candidates, log_wealth, segment_level
from agent.calibration import min_sample_size
from agent.certificate import FEWEST, Certifier, PerBatchCertifier, fewest_to_certify
from policies import CERTIFICATION_RULES
from tests.agent.test_certificate import ALPHA, DELTA, HORIZON, REPS, SCORERS, Scorer
from tests.factories import make_policy


def _share(scorer: Scorer, threshold: float | None) -> float:
    """The share of the stream at or above ``threshold`` (what it auto-labels)."""
    return 0.0 if threshold is None else ((1.0 - threshold) / 0.5) ** (1.0 / scorer.k)


def _through(certifier: BettingCertifier | Certifier, scorer: Scorer, conf: np.ndarray,
             ok: np.ndarray) -> tuple[bool, bool, float]:
    """One stream through a rule as the learner runs it: (some certificate in force was bad, anything was
    certified, the share auto-labeled at the horizon). Batches as in ``test_certificate``: 32 calibration items
    before the first certificate, then 6 (audits)."""
    true_error = scorer.true_error()
    n, bad, certified, threshold = 0, False, False, None
    while n < HORIZON:
        threshold = certifier.update(conf[:n], ok[:n]).threshold
        if threshold is not None:
            certified = True
            bad = bad or true_error(threshold) > ALPHA
        n += 32 if threshold is None else 6
    return bad, certified, _share(scorer, threshold)


def _both(scorer: Scorer, rng: np.random.Generator) -> tuple[bool, bool, float, float]:
    """One stream through both rules: betting's (bad, certified, share) and the checkpoint rule's share."""
    conf, ok = scorer.draw(rng, HORIZON)
    betting = _through(BettingCertifier(ALPHA, DELTA, min_size=150, window=4000), scorer, conf, ok)
    checkpoints = _through(Certifier(ALPHA, DELTA, min_size=150), scorer, conf, ok)
    return (*betting, checkpoints[2])


@pytest.mark.parametrize("scorer", SCORERS, ids=lambda s: s.name)
def test_the_betting_rule_keeps_the_guarantee_after_every_batch(scorer: Scorer) -> None:
    rng = np.random.default_rng(18)
    runs = [_both(scorer, rng) for _ in range(REPS)]
    bad = sum(r[0] for r in runs)
    mc = 2.33 * math.sqrt(DELTA * (1 - DELTA) / REPS)  # one-sided 99%: 0.016 at 1,000 runs
    assert bad / REPS <= DELTA + mc
    assert sum(r[1] for r in runs) >= scorer.certifies * REPS
    # the price: on the same streams it auto-labels more than the checkpoint rule (mean share at the horizon)
    assert np.mean([r[2] for r in runs]) > np.mean([r[3] for r in runs])


def test_the_wealth_is_the_mixture_likelihood_ratio() -> None:
    alpha = 0.05
    for n, e in [(0, 0), (60, 0), (200, 3), (500, 40)]:
        direct, _ = quad(lambda p, n=n, e=e: (p / alpha) ** e * ((1 - p) / (1 - alpha)) ** (n - e) / alpha, 0, alpha)
        assert float(log_wealth(np.array([float(n)]), np.array([float(e)]), alpha)[0]) == pytest.approx(
            math.log(direct), rel=1e-6, abs=1e-9)
    # error-free items raise it, an error lowers it; 1 / delta is reached near where a single test would be
    w = log_wealth(np.array([100.0, 101.0, 101.0]), np.array([0.0, 0.0, 1.0]), alpha)
    assert w[1] > w[0] > w[2]
    first = next(n for n in range(1, 400) if log_wealth(np.array([float(n)]), np.array([0.0]), alpha)[0]
                 >= math.log(1 / segment_level(DELTA, 0)))
    assert 59 < first < 2 * 59  # the single Clopper-Pearson test at 0.05 needs 59


@pytest.mark.parametrize("alpha", [0.1, 0.05, 0.02])
def test_the_fewest_items_that_can_certify_are_the_fewest_that_do(alpha: float) -> None:
    """``fewest``: one error-free item fewer certifies nothing; that many certify the grid's top (and are more than
    one Clopper-Pearson test needs: the mixture's price)."""
    n = BettingCertifier.fewest(alpha, DELTA)
    conf = np.full(n, 1.0)
    for size, certified in ((n - 1, False), (n, True)):
        certifier = BettingCertifier(alpha, DELTA, min_size=1, window=10_000)
        assert (certifier.update(conf[:size], np.ones(size, dtype=bool)).threshold is not None) is certified
    assert n > PerBatchCertifier.fewest(alpha, DELTA) == min_sample_size(alpha, DELTA)
    assert set(FEWEST) == set(CERTIFICATION_RULES)  # every rule has its count
    rules = {rule: fewest_to_certify(make_policy(certification=rule, target_precision=1 - alpha))
             for rule in CERTIFICATION_RULES}
    assert rules == {"per_batch": min_sample_size(alpha, DELTA), "anytime": Certifier.fewest(alpha, DELTA),
                     "betting": n}


def test_levels_and_grid_are_fixed_before_the_data() -> None:
    assert sum(segment_level(0.05, r) for r in range(100_000)) == pytest.approx(0.05, rel=1e-4)
    grid = candidates(0.05)
    assert grid[0] == pytest.approx(0.95) and np.allclose(np.diff(grid), -0.005) and grid[-1] > 0


def test_folding_in_batches_equals_folding_at_once_and_a_rescoring_starts_over() -> None:
    rng = np.random.default_rng(3)
    conf = 1.0 - 0.5 * rng.uniform(size=1500) ** 3
    ok = rng.uniform(size=1500) >= (1.0 - conf) * 0.5
    batched = BettingCertifier(ALPHA, DELTA, min_size=150, window=4000)
    for n in range(150, 1501, 50):
        res = batched.update(conf[:n], ok[:n])
    once = BettingCertifier(ALPHA, DELTA, min_size=150, window=4000).update(conf, ok)
    assert res == once and res.threshold is not None
    # the same items rescored by a model wrong below 0.9: folded again from the start; the window shows the
    # threshold in force wrong, so the higher one certified now replaces it (a certificate, not a loss)
    worse = ok.copy()
    worse[conf < 0.9] = False
    again = batched.update(conf, worse)
    assert again == BettingCertifier(ALPHA, DELTA, min_size=150, window=4000).update(conf, worse)
    assert again.threshold is not None and again.threshold > res.threshold and batched.losses == 0



def test_a_rescoring_that_certifies_nothing_keeps_the_certificate_the_window_does_not_show_wrong() -> None:
    cert = BettingCertifier(ALPHA, DELTA, min_size=150, window=4000)
    conf, ok = np.full(400, 0.99), np.ones(400, dtype=bool)
    held = cert.update(conf, ok)
    assert held.threshold is not None
    rescored = ok.copy()
    rescored[:16] = False  # 4% wrong, the errors first: no candidate's wealth reaches 1 / delta on these ...
    assert BettingCertifier(ALPHA, DELTA, min_size=150, window=4000).update(conf, rescored).threshold is None
    kept = cert.update(conf, rescored)  # ... but 16 of 400 does not show an error above 5% either
    assert kept.threshold == held.threshold and kept.errors_above == 16 and cert.kept == 1 and cert.losses == 0
    # a window that shows the certificate wrong withdraws it
    assert cert.update(conf, np.zeros(400, dtype=bool)).threshold is None and cert.losses == 1


def _first_passing(level: float) -> int:
    """The fewest error-free items whose wealth reaches ``1 / level``."""
    return next(n for n in range(1, 10_000)
                if log_wealth(np.array([float(n)]), np.array([0.0]), ALPHA)[0] >= math.log(1 / level))


def test_a_reset_runs_the_next_segment_at_its_own_level_and_a_restore_keeps_it() -> None:
    cert = BettingCertifier(ALPHA, DELTA, min_size=10, window=4000)
    n0, n1 = _first_passing(segment_level(DELTA, 0)), _first_passing(segment_level(DELTA, 1))
    assert n1 > n0
    conf, ok = np.full(n1, 0.99), np.ones(n1, dtype=bool)
    assert cert.update(conf[:n0 - 1], ok[:n0 - 1]).threshold is None
    first = cert.update(conf[:n0], ok[:n0])
    assert first.threshold == pytest.approx(candidates(ALPHA)[-1]) and first.n_above == n0
    cert.reset()
    assert cert.certificate is None and cert.losses == 1 and cert.level == segment_level(DELTA, 1)
    again = BettingCertifier(ALPHA, DELTA, min_size=10, window=4000)
    again.restore(cert.state(), first)
    assert again.segment == 1 and again.losses == 1 and again.certificate == first
    # the new segment is tested at its smaller level: the items that passed before do not pass now
    assert cert.update(conf[:n0], ok[:n0]).threshold is None
    assert cert.update(conf, ok).threshold is not None
