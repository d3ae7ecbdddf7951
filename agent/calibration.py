"""The precision guarantee: a confidence threshold chosen from human-verified samples.

Fixed-sequence testing (Bates et al., "Distribution-free, risk-controlling prediction sets";
Angelopoulos et al., "Learn then Test"): candidate thresholds are ordered from high to low using
the confidences alone; each is tested with a one-sided Clopper-Pearson upper bound on the error rate
of calibration items at or above it, and the scan stops at the first failure. The lowest accepted
threshold is used. If the calibration sample is an i.i.d. sample of the stream's confidences (the
cold-start items and the random audits are), the auto-label error rate exceeds ``alpha`` with
probability at most ``delta``. Escalated items are not used: they are selected by confidence, so
they are not a sample of the stream (see ``docs/DESIGN-NOTES.md`` for what was measured).

Critical labels (``Policy.critical_labels``): each candidate is also tested on the calibration items whose *true*
label is a critical label, with the same rule; a candidate passes only if every test passes. The null of the
combined test, "the error above ``t`` exceeds ``alpha`` overall or among the critical label's items", is a union, and
rejecting it needs every part rejected: an intersection-union test, valid at ``delta`` with each part at ``delta``.
So the fixed sequence keeps its level, and the certificate also bounds the error among auto-labeled items of each
critical label (an out-of-scope class, say) by ``alpha``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TypeAlias

import numpy as np
from scipy.special import betaincinv
from scipy.stats import beta as beta_dist

Strata: TypeAlias = tuple[np.ndarray, ...]  # per critical label: which calibration items truly carry it (bool)


def cp_upper(errors: np.ndarray | int, n: np.ndarray | int, delta: float) -> np.ndarray:
    """One-sided Clopper-Pearson upper bound at level ``1 - delta`` for ``errors`` out of ``n``."""
    k = np.asarray(errors, dtype=np.float64)
    m = np.asarray(n, dtype=np.float64)
    out = np.ones(np.broadcast(k, m).shape, dtype=np.float64)
    ok = (k < m) & (m > 0)
    a = np.broadcast_to(k + 1.0, out.shape)[ok]
    b = np.broadcast_to(m - k, out.shape)[ok]
    out[ok] = betaincinv(a, b, 1.0 - delta)  # the Beta(a, b) quantile, without scipy.stats' per-call overhead
    return out


def cp_interval(successes: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Two-sided Clopper-Pearson interval for a proportion (``(0, 1)`` when ``n`` is 0)."""
    if n <= 0:
        return (0.0, 1.0)
    a = (1.0 - level) / 2.0
    lo = 0.0 if successes == 0 else float(beta_dist.ppf(a, successes, n - successes + 1))
    hi = 1.0 if successes == n else float(beta_dist.ppf(1.0 - a, successes + 1, n - successes))
    return (lo, hi)


def cp_lower(errors: int, n: int, delta: float) -> float:
    """One-sided Clopper-Pearson lower bound at level ``1 - delta``."""
    if n <= 0 or errors <= 0:
        return 0.0
    return float(beta_dist.ppf(delta, errors, n - errors + 1))


def min_sample_size(alpha: float, delta: float) -> int:
    """The fewest error-free calibration items that can certify error <= alpha at 1 - delta."""
    return max(1, math.ceil(math.log(delta) / math.log(1.0 - alpha)))


@dataclass(frozen=True, slots=True)
class ThresholdResult:
    threshold: float | None  # None: nothing may be auto-accepted yet
    n_calibration: int
    n_above: int  # calibration items at or above the threshold
    errors_above: int
    error_bound: float  # CP upper bound of the error rate above the threshold (1.0 if none)


@dataclass(frozen=True, slots=True)
class CertificateState:
    """What the certifier holds, for metrics and persistence."""

    tests: int  # tests made so far in the run (the next one runs at ``spent_level(delta, tests)``)
    next_size: int  # the calibration segment size of the next checkpoint
    losses: int  # certificates withdrawn (only a reset withdraws one)
    certified_at_test: int | None  # the test that issued the certificate in force
    checkpoints: tuple[tuple[int, int], ...] = ()  # anytime: (sample size, test index) of the segment's checkpoints
    segment: int = 0  # betting: calibration segments begun after drift resets (the level depends on it)


def choose_threshold(
    confidence: Sequence[float] | np.ndarray,
    correct: Sequence[bool] | np.ndarray,
    *,
    alpha: float,
    delta: float,
    start_share: float = 0.75,
    strata: Strata = (),
) -> ThresholdResult:
    """Lowest threshold whose fixed-sequence Clopper-Pearson test passes, or ``None``.

    Candidates are the confidences at the calibration counts ``n_0 < n_1 < n_2 < ...`` from the top,
    where ``n_k`` is the smallest count at which ``k`` errors can still pass: each test is made where
    it has the most room for one more error, so a single early mistake does not end the scan (a
    finer grid would test, and fail, just past it). Past the last ``n_k <= n`` every count up to ``n``
    is a candidate: there ``k`` errors pass and ``k + 1`` do not (``n_{k+1} > n``), so the passing
    counts form a prefix and testing each one finds its end.

    The sequence starts at the largest ``n_k`` at most ``start_share * m`` (at ``n_0`` if there is none),
    where ``m`` is the largest count whose mean stated error ``1 - confidence`` is at most ``alpha``: what the
    models claim they could certify. Certificates covering less than that share of it are given up, and in
    exchange one confident mistake among the very top items (a mislabeled item, say) cannot block a large
    calibration set any more (starting at ``n_0``, every test needs zero errors among the top ``n_0``). The
    grid depends on the counts and confidences only, never on correctness, which keeps the test valid.

    ``strata``: one boolean mask per critical label (the items whose true label it is); a candidate also needs each
    mask's items at or above it to pass the same test (module doc).
    """
    conf = np.asarray(confidence, dtype=np.float64)
    ok = np.asarray(correct, dtype=bool)
    n_total = conf.shape[0]
    if conf.shape != ok.shape:
        raise ValueError("confidence and correct must have the same length")
    if n_total < min_sample_size(alpha, delta):
        return ThresholdResult(None, n_total, 0, 0, 1.0)
    order = np.argsort(-conf, kind="stable")
    conf_sorted = conf[order]
    allowance = allowance_counts(alpha, delta, n_total)
    counts = [n for n in allowance if n <= n_total]
    stated = np.cumsum(1.0 - conf_sorted) / np.arange(1, n_total + 1)  # non-decreasing: confidences fall
    claimed = int(np.searchsorted(stated, alpha, side="right"))
    skip = sum(1 for n in counts if n <= start_share * claimed)
    counts = counts[max(skip - 1, 0):]
    wrong = ~ok[order]
    parts = tuple((np.cumsum(mask[order]), np.cumsum(wrong & mask[order])) for mask in _masks(strata, conf.shape))
    return _scan(conf_sorted, np.cumsum(wrong), counts, allowance, delta, parts)


def _masks(strata: Strata, shape: tuple[int, ...]) -> Strata:
    masks = tuple(np.asarray(mask, dtype=bool) for mask in strata)
    if any(mask.shape != shape for mask in masks):
        raise ValueError("each stratum must have one entry per calibration item")
    return masks


COUNT_CACHE = 16_384  # i18: (errors, alpha, delta) entries; a 4,000-item window at alpha 0.1 reads 370 of them


@lru_cache(maxsize=COUNT_CACHE)  # 256 thrashed once a grid passed 256 entries: every certification redid them all
def _count_for_errors(errors: int, alpha: float, delta: float) -> int:
    """The smallest n with ``cp_upper(errors, n) <= alpha`` (binary search; the bound falls with n)."""
    lo = max(errors + 1, min_sample_size(alpha, delta))
    hi = lo
    while float(cp_upper(errors, hi, delta)) > alpha:
        lo, hi = hi, hi * 2
    while lo < hi:
        mid = (lo + hi) // 2
        if float(cp_upper(errors, mid, delta)) <= alpha:
            hi = mid
        else:
            lo = mid + 1
    return hi


def allowance_counts(alpha: float, delta: float, n_max: int) -> list[int]:
    """``n_0, n_1, ...``: the counts at which 0, 1, ... errors first pass, up to the first beyond ``n_max``."""
    out = [_count_for_errors(0, alpha, delta)]
    while out[-1] <= n_max:
        out.append(_count_for_errors(len(out), alpha, delta))
    return out


def _scan(conf_sorted: np.ndarray, errors_cum: np.ndarray, counts: list[int], allowance: list[int],
          delta: float, parts: tuple[tuple[np.ndarray, np.ndarray], ...] = ()) -> ThresholdResult:
    """The fixed sequence over ``counts``, then every count up to ``n``, stopping at the first failed test.

    A test passes iff ``cp_upper(errors, n) <= alpha``, i.e. iff ``n >= n_errors`` (the bound falls with ``n``
    and rises with ``errors``; ``allowance`` lists ``n_0, n_1, ...`` past the largest ``n``): integer
    comparisons, one Clopper-Pearson bound for the result. ``parts``: each critical label's cumulative (items,
    errors) in the same order; a candidate fails if any of them fails the same comparison.
    """
    n_total = conf_sorted.shape[0]
    counts = [*counts, *range(counts[-1] + 1, n_total + 1)]
    cand = conf_sorted[np.asarray(counts) - 1]
    # With ties, "confidence >= t" can include more items than the nominal count.
    n_at = np.searchsorted(-conf_sorted, -cand, side="right")
    err_at = errors_cum[n_at - 1]
    grid = np.asarray(allowance)
    fails = err_at > np.searchsorted(grid, n_at, side="right") - 1  # more errors than pass at n_at
    for seen_cum, wrong_cum in parts:  # under n_0 items of the label: -1 errors pass, so the candidate fails
        fails |= wrong_cum[n_at - 1] > np.searchsorted(grid, seen_cum[n_at - 1], side="right") - 1
    failed = np.nonzero(fails)[0]
    last = (failed[0] - 1) if failed.size else len(cand) - 1
    if last < 0:
        return ThresholdResult(None, n_total, 0, 0, float(cp_upper(err_at[0], n_at[0], delta)))
    return ThresholdResult(float(cand[last]), n_total, int(n_at[last]), int(err_at[last]),
                           float(cp_upper(err_at[last], n_at[last], delta)))


def in_force(result: ThresholdResult | None) -> ThresholdResult | None:
    """``result`` if it certifies a threshold, else None: what a certifier holds as the certificate in force."""
    return result if result is not None and result.threshold is not None else None


def counted_at(threshold: float, confidence: np.ndarray, correct: np.ndarray, delta: float) -> ThresholdResult:
    """``threshold`` with this window's counts at or above it and their Clopper-Pearson upper bound at ``delta``."""
    above = confidence >= threshold
    n_above, errors = int(above.sum()), int((~correct[above]).sum())
    return ThresholdResult(threshold, int(confidence.shape[0]), n_above, errors,
                           float(cp_upper(errors, n_above, delta)))


def counts_above(threshold: float, confidence: np.ndarray, correct: np.ndarray,
                 strata: Strata) -> list[tuple[int, int]]:
    """(errors, items) at or above ``threshold`` among each stratum's items (a critical label's), in order."""
    above = confidence >= threshold
    return [(int((above & mask & ~correct).sum()), int((above & mask).sum()))
            for mask in _masks(strata, confidence.shape)]


def _held_counts(threshold: float, confidence: np.ndarray, correct: np.ndarray, delta: float,
                 strata: Strata) -> tuple[ThresholdResult, list[tuple[int, int]]]:
    """``threshold`` counted on this window, and its (errors, items): overall first, then per stratum."""
    counted = counted_at(threshold, confidence, correct, delta)
    return counted, [(counted.errors_above, counted.n_above), *counts_above(threshold, confidence, correct, strata)]


def _shown_wrong(counts: list[tuple[int, int]], *, alpha: float, delta: float) -> bool:
    """Whether any of ``counts`` shows its error above ``alpha`` with confidence ``1 - delta`` (CP lower bound)."""
    return any(cp_lower(errors, n, delta) > alpha for errors, n in counts)


def recount(held: ThresholdResult, confidence: np.ndarray, correct: np.ndarray, *, alpha: float,
            delta: float, strata: Strata = ()) -> ThresholdResult | None:
    """The certificate in force, counted again on this window; None if the window shows its error above ``alpha``
    with confidence ``1 - delta`` (the Clopper-Pearson lower bound of the errors at or above it exceeds ``alpha``),
    overall or among any critical label's items."""
    if held.threshold is None:
        return None
    counted, counts = _held_counts(held.threshold, confidence, correct, delta, strata)
    return None if _shown_wrong(counts, alpha=alpha, delta=delta) else counted


def keep_or_replace(held: ThresholdResult | None, result: ThresholdResult, confidence: np.ndarray,
                    correct: np.ndarray, *, alpha: float, delta: float,
                    strata: Strata = ()) -> tuple[ThresholdResult, bool]:
    """``result``, or ``held`` (the certificate in force) recounted on this window. Returns (the certificate,
    whether ``held`` was kept).

    - ``result`` certifies ``held``'s threshold or a lower one: ``result``.
    - ``result`` certifies nothing: ``held``, unless this window shows it wrong (:func:`recount`), so a failed
      scan alone never sends the stream back to humans.
    - ``result`` certifies only a higher threshold (a smaller slice, certified on this window): ``held`` only if
      this window certifies it too, tested alone (its Clopper-Pearson bound, and each critical label's, at most
      ``alpha``). ``held`` was certified on an earlier scorer; kept here merely for lack of evidence against it,
      it let a scorer trained later decide at a threshold its own window did not support (fashion5k at 0.90:
      auto precision 0.886 and 0.895 on two seeds of three; DESIGN-NOTES section 14).
    """
    if held is None or held.threshold is None or (result.threshold is not None and result.threshold <= held.threshold):
        return result, False
    counted, counts = _held_counts(held.threshold, confidence, correct, delta, strata)
    if _shown_wrong(counts, alpha=alpha, delta=delta):
        return result, False
    if result.threshold is not None and any(float(cp_upper(errors, n, delta)) > alpha for errors, n in counts):
        return result, False  # a certified higher threshold, and the window does not certify ``held`` alone
    return counted, True


@dataclass(frozen=True, slots=True)
class DriftResult:
    drifted: bool
    n_audits: int
    errors: int
    lower_bound: float  # CP lower bound of the audited error rate


def detect_drift(audit_correct: Sequence[bool] | np.ndarray, *, alpha: float, delta: float) -> DriftResult:
    """Audited error among auto-accepted items exceeds ``alpha`` with confidence ``1 - delta``."""
    ok = np.asarray(audit_correct, dtype=bool)
    n = int(ok.shape[0])
    errors = int((~ok).sum())
    lower = cp_lower(errors, n, delta)
    return DriftResult(lower > alpha, n, errors, lower)
