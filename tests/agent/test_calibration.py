"""The threshold rule and its guarantee, on synthetic confidences with a known error rate."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.stats import binom

from agent.calibration import choose_threshold, cp_interval, cp_lower, cp_upper, detect_drift, min_sample_size


def test_cp_upper_matches_binomial_definition() -> None:
    # The upper bound u is where P(X <= k | n, u) = delta.
    for k, n in [(0, 150), (3, 300), (10, 500)]:
        u = float(cp_upper(k, n, 0.05))
        assert binom.cdf(k, n, u) == pytest.approx(0.05, abs=1e-6)
    assert float(cp_upper(5, 5, 0.05)) == 1.0
    assert float(cp_upper(0, 0, 0.05)) == 1.0


def test_cp_lower_and_interval() -> None:
    lo = cp_lower(10, 100, 0.05)
    assert 1 - binom.cdf(9, 100, lo) == pytest.approx(0.05, abs=1e-6)
    assert cp_lower(0, 100, 0.05) == 0.0
    lo, hi = cp_interval(95, 100)
    assert lo < 0.95 < hi
    assert cp_interval(0, 0) == (0.0, 1.0)


def test_min_sample_size() -> None:
    n = min_sample_size(0.02, 0.05)
    assert float(cp_upper(0, n, 0.05)) <= 0.02 < float(cp_upper(0, n - 1, 0.05))


def test_too_little_data_gives_no_threshold() -> None:
    r = choose_threshold(np.ones(50), np.ones(50, dtype=bool), alpha=0.02, delta=0.05)
    assert r.threshold is None


def test_perfect_classifier_accepts_everything() -> None:
    conf = np.linspace(0.5, 1.0, 1000)
    r = choose_threshold(conf, np.ones(1000, dtype=bool), alpha=0.02, delta=0.05)
    assert r.threshold == pytest.approx(0.5)
    assert r.n_above == 1000 and r.errors_above == 0


def test_errors_at_the_top_block_everything() -> None:
    conf = np.linspace(0.5, 1.0, 1000)
    correct = np.ones(1000, dtype=bool)
    correct[-20:] = False  # the most confident items are wrong
    r = choose_threshold(conf, correct, alpha=0.02, delta=0.05)
    assert r.threshold is None


def test_past_the_last_allowance_count_every_count_is_tested() -> None:
    # 1,000 items, most confident first; the 21 least confident are wrong. The allowance counts up to 1,000
    # end at 969 (12 errors allowed from there to 1,029): every count up to the 13th error passes.
    conf = np.linspace(1.0, 0.5, 1000)
    correct = np.ones(1000, dtype=bool)
    correct[979:] = False
    r = choose_threshold(conf, correct, alpha=0.02, delta=0.05)
    assert r.n_above == 991 and r.errors_above == 12
    assert r.threshold == pytest.approx(conf[990])
    assert float(cp_upper(13, 992, 0.05)) > 0.02 >= r.error_bound


def _trial(rng: np.random.Generator, n: int, alpha: float, delta: float) -> tuple[float | None, float]:
    # P(wrong | c) = (1 - c) * 0.4: calibrated-ish, error grows as confidence falls.
    conf = rng.uniform(0.5, 1.0, n)
    correct = rng.uniform(size=n) >= (1.0 - conf) * 0.4
    r = choose_threshold(conf, correct, alpha=alpha, delta=delta)
    if r.threshold is None:
        return None, 0.0
    # True error above t: E[(1 - c) * 0.4 | c >= t] for c ~ U(0.5, 1) = 0.2 * (1 - t).
    return r.threshold, 0.2 * (1.0 - r.threshold)


@pytest.mark.parametrize(("alpha", "n"), [(0.02, 10000), (0.05, 2000), (0.1, 500)])
def test_guarantee_holds_in_95_percent_of_trials(alpha: float, n: int) -> None:
    rng = np.random.default_rng(1234)
    trials = 400
    violations = 0
    accepted = 0
    for _ in range(trials):
        t, true_error = _trial(rng, n, alpha, 0.05)
        if t is not None:
            accepted += 1
            violations += true_error > alpha
    assert accepted > trials * 0.5  # the rule is not vacuous: it usually finds a threshold
    assert violations / trials <= 0.05


def test_a_confident_mistake_at_the_top_does_not_block_a_large_calibration_set() -> None:
    # 1,000 items the models call 97-100% sure (mean stated error 1.5%: all of them claimed at alpha 0.02),
    # one mistake at rank 10 (a mislabeled item, say). Starting at n_0 = 149 nothing passes; starting at the
    # largest allowance count within 3/4 of the claimed 1,000 (719, 8 errors allowed) everything does.
    conf = np.linspace(1.0, 0.97, 1000)
    correct = np.ones(1000, dtype=bool)
    correct[9] = False
    assert choose_threshold(conf, correct, alpha=0.02, delta=0.05, start_share=0.0).threshold is None
    r = choose_threshold(conf, correct, alpha=0.02, delta=0.05)
    assert r.n_above == 1000 and r.errors_above == 1


def test_a_model_that_claims_little_keeps_its_small_certificates() -> None:
    # Stated errors are large (confidences down to 0.5, claimed: the top 80): the sequence starts at n_0 as
    # ever, and the clean top half is certified up to its last allowance count although the rest is wrong.
    conf = np.linspace(1.0, 0.5, 1000)
    correct = np.r_[np.ones(500, dtype=bool), np.zeros(500, dtype=bool)]
    r = choose_threshold(conf, correct, alpha=0.02, delta=0.05)
    assert r.n_above == 456 and r.errors_above == 0


def _tail_true_error(t: float) -> float:
    # 94% of items: confidence U(0.8, 1), 0.1% wrong; 6%: U(0.5, 0.8), P(wrong | c) = (0.8 - c) / 0.3.
    if t >= 0.8:
        return 0.001
    share = 0.06 * (0.8 - t) / 0.3  # of the low component above t
    return (0.94 * 0.001 + share * (0.8 - t) / 0.6) / (0.94 + share)


def test_guarantee_holds_when_the_tail_decides() -> None:
    # 420 calibration items (about what sms_spam holds): the certificate usually ends past the last allowance
    # count (386), where every count is tested, and a threshold below about 0.57 would break the guarantee.
    rng = np.random.default_rng(4321)
    trials, violations, in_tail = 400, 0, 0
    for _ in range(trials):
        low = rng.uniform(size=420) < 0.06
        conf = np.where(low, rng.uniform(0.5, 0.8, 420), rng.uniform(0.8, 1.0, 420))
        correct = rng.uniform(size=420) >= np.where(low, (0.8 - conf) / 0.3, 0.001)
        r = choose_threshold(conf, correct, alpha=0.02, delta=0.05)
        if r.threshold is not None:
            in_tail += r.n_above > 386
            violations += _tail_true_error(r.threshold) > 0.02
    assert in_tail > trials * 0.75
    assert 0 < violations <= trials * 0.05  # the bound is tight enough to be tested, and it holds


def test_drift_detection() -> None:
    assert detect_drift(np.r_[np.ones(180, bool), np.zeros(20, bool)], alpha=0.02, delta=0.05).drifted
    assert not detect_drift(np.r_[np.ones(198, bool), np.zeros(2, bool)], alpha=0.02, delta=0.05).drifted
    assert not detect_drift(np.zeros(0, bool), alpha=0.02, delta=0.05).drifted


def test_the_allowance_grid_of_a_large_window_is_computed_once() -> None:
    """i18: the grid for a full calibration window at a loose target has hundreds of entries; certifying again (after
    every batch) must read them from the cache, not search them again (a 256-entry cache thrashed: 0.3 s a batch)."""
    from agent.calibration import _count_for_errors, allowance_counts

    first = allowance_counts(0.1, 0.05, 4000)
    assert len(first) > 256  # larger than the old cache
    misses = _count_for_errors.cache_info().misses
    again = allowance_counts(0.1, 0.05, 4000)
    assert again == first
    assert _count_for_errors.cache_info().misses == misses
