"""``certification: betting``: a precision certificate valid at every batch of the run, from test supermartingales.

One e-process per candidate threshold, fixed-sequence across thresholds (Waudby-Smith and Ramdas, "Estimating
means of bounded random variables by betting"; Learn then Test's fixed sequence, with e-values in place of
p-values):

- **Candidates.** A grid fixed before any data: ``t_0 = 1 - alpha``, then down in steps of ``alpha / 10``.
  Nothing about it is learned from the stream, so the order of the tests never looks at the data. (The top was
  ``1 - alpha / 2`` before the fifteenth session: a calibrated scorer's items above ``1 - alpha`` already err less
  than ``alpha`` on average, and the larger first sub-stream ends the cold start sooner; ``docs/DESIGN-NOTES.md``
  section 14.)
- **One e-process per candidate.** For candidate ``t``, the calibration items with confidence ``>= t`` are a
  sub-stream, in arrival order. After ``n`` of them with ``e`` wrong, its wealth is the likelihood ratio of an
  error rate ``p`` against ``alpha``, mixed over ``p`` uniform on ``[0, alpha]`` (:func:`log_wealth`). Each
  ``p <= alpha`` gives a nonnegative supermartingale under the null "the error among items at or above ``t`` is at
  least ``alpha``", so their mixture is one too: by Ville's inequality it ever reaches ``1 / delta`` with
  probability at most ``delta``. The mixture has no constants to tune (a plug-in Kelly bet, tried first,
  had a cap and a shrinkage; ``docs/DESIGN-NOTES.md`` section 14 compares them).
- **Fixed sequence.** A candidate is certified when its wealth has reached ``1 / delta`` at some point of the run
  and so has every candidate above it; the lowest such candidate is the threshold. A false certificate needs the
  first candidate whose null holds to be rejected: probability at most ``delta``, however often the test is
  made and however long the stream runs. No level is spent per look, which is what makes this rule cheaper than
  :class:`agent.certificate.Certifier`'s checkpoints.
- **Segments.** After a drift reset the e-processes restart on the new segment; segment ``r`` runs at level
  ``delta_r`` (``0.9 delta`` for the first, ``0.1 delta / (r (r + 1))`` after): these sum to ``delta``.

What is covered: a fixed scorer on an i.i.d. stream (within a segment), at any horizon. A retrain rescores the
calibration items, and the wealth paths are computed again on the new confidences: that is a new look at the same
items, not covered by the argument (as for the other rules; ``docs/DESIGN-NOTES.md`` section 14). The certificate in
force stays, as with ``per_batch``, until the current window shows its error above ``alpha`` (a Clopper-Pearson
lower bound) or a drift reset withdraws it.
"""

from __future__ import annotations

import math
from functools import cache

import numpy as np
from scipy.special import betainc, betaln

from agent.calibration import CertificateState, Strata, ThresholdResult, counted_at, in_force, keep_or_replace

FIRST_SHARE = 0.9  # the first segment's share of delta; later ones share the rest


def segment_level(delta: float, segment: int) -> float:
    """``delta_r``: the level of calibration segment ``r`` (0-based). ``sum_r delta_r = delta``."""
    if segment == 0:
        return FIRST_SHARE * delta
    return (1.0 - FIRST_SHARE) * delta / (segment * (segment + 1))


def candidates(alpha: float) -> np.ndarray:
    """The fixed grid of thresholds, highest first: ``1 - alpha`` down in steps of ``alpha / 10``, above 0."""
    top, step = 1.0 - alpha, alpha / 10.0
    return top - step * np.arange(math.floor(top / step))


@cache  # asked at every graph run of a cold start; a pure function of two numbers
def fewest_items(alpha: float, level: float) -> int:
    """The fewest calibration items, all right, whose wealth reaches ``1 / level``: no candidate can be certified on
    fewer. (With no error the wealth grows with every item, so the count is found by doubling, then bisection.)"""
    goal = math.log(1.0 / level)

    def reaches(n: int) -> bool:
        return bool(log_wealth(np.asarray([float(n)]), np.zeros(1), alpha)[0] >= goal)

    high = 1
    while not reaches(high):
        high *= 2
    low = high // 2  # does not reach (or is 0)
    while high - low > 1:
        mid = (low + high) // 2
        low, high = (low, mid) if reaches(mid) else (mid, high)
    return high


def log_wealth(n: np.ndarray, errors: np.ndarray, alpha: float) -> np.ndarray:
    """``log W`` after ``n`` items with ``errors`` wrong: the likelihood ratio of error rate ``p`` against ``alpha``,
    mixed over ``p`` uniform on ``[0, alpha]``: ``(1 / alpha) int_0^alpha (p / alpha)^e ((1 - p) / (1 - alpha))^(n - e)
    dp``, in closed form through the regularized incomplete beta function."""
    a, b = errors + 1.0, n - errors + 1.0
    with np.errstate(divide="ignore"):
        mass = np.log(betainc(a, b, alpha))
    return np.asarray(mass + betaln(a, b) - a * math.log(alpha) - (n - errors) * math.log1p(-alpha), dtype=np.float64)


def fold_peaks(conf: np.ndarray, wrong: np.ndarray, thresholds: np.ndarray, alpha: float,
               start: tuple[np.ndarray, np.ndarray, np.ndarray],
               goal: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each threshold's sub-stream (count, errors, highest ``log W`` before its latest item) after the items
    ``conf``, ``wrong`` in arrival order, from ``start`` (the same three for the items before).

    ``W`` grows with every right answer and falls at every error, so its peaks are just before each error and at
    the end. Only the points before errors are computed here, for thresholds whose peak is still under ``goal``
    (past it, a threshold stays rejected); the end is computed when a decision needs it (:func:`scan`)."""
    seen0, errs0, peak0 = start
    if conf.shape[0] == 0:
        return start
    above = conf[:, None] >= thresholds[None, :]  # (items, thresholds)
    err = above & wrong[:, None]
    seen = seen0 + np.cumsum(above, axis=0)
    errs = errs0 + np.cumsum(err, axis=0)
    peak = peak0.copy()
    rows, cols = np.nonzero(err & (peak0 < goal)[None, :])
    if rows.size:  # just before each error: that item not yet counted
        np.maximum.at(peak, cols, log_wealth(seen[rows, cols] - 1.0, errs[rows, cols] - 1.0, alpha))
    return seen[-1], errs[-1], peak


def scan(state: tuple[np.ndarray, np.ndarray, np.ndarray], alpha: float, goal: float, chunk: int = 16) -> int:
    """The fixed sequence: the number of candidates, from the highest, whose ``log W`` has reached ``goal``. The
    current wealth of candidates not yet past it is computed in order, a chunk at a time, until one fails; it is
    kept in the state's peaks (a value the path reached)."""
    seen, errs, peak = state
    pending = np.nonzero(peak < goal)[0]
    for at in range(0, pending.size, chunk):
        idx = pending[at:at + chunk]
        peak[idx] = np.maximum(peak[idx], log_wealth(seen[idx], errs[idx], alpha))
        if (peak[idx] < goal).any():
            break
    failed = np.nonzero(peak < goal)[0]
    return int(failed[0]) if failed.size else int(peak.size)


class _Wealth:
    """One sub-stream's e-processes over the grid (every calibration item, or a critical label's items), with the
    confidences and correctness folded in so far: items folded in before with the same values are not folded again
    (between rescorings, and always with a fixed scorer); a rescored sub-stream is folded from its start."""

    def __init__(self, grid: np.ndarray) -> None:
        self.grid = grid
        self.state = self._empty()  # per candidate: sub-stream count, errors, highest log W
        self._folded = np.zeros(0)
        self._wrong = np.zeros(0, dtype=bool)

    def fold(self, conf: np.ndarray, wrong: np.ndarray, alpha: float,
             goal: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        done = self._folded.shape[0]
        if not (done <= conf.shape[0] and np.array_equal(self._folded, conf[:done])
                and np.array_equal(self._wrong, wrong[:done])):
            done, self.state = 0, self._empty()
        self.state = fold_peaks(conf[done:], wrong[done:], self.grid, alpha, self.state, goal)
        self._folded, self._wrong = conf.copy(), wrong.copy()
        return self.state

    def _empty(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        zeros = np.zeros(self.grid.shape[0])
        return zeros, zeros.copy(), zeros.copy()


class BettingCertifier:
    """Decides, after every batch, which threshold is certified (see the module doc). ``update`` takes the
    calibration segment's confidences and correctness in arrival order, as the learner passes them, and the
    critical labels' masks (a candidate is certified only when each critical label's own sub-stream has also
    reached ``1 / delta_r``: an intersection-union test, see :mod:`agent.calibration`)."""

    def __init__(self, alpha: float, delta: float, *, min_size: int, window: int) -> None:
        if not 0.0 < alpha < 1.0 or not 0.0 < delta < 1.0:
            raise ValueError("alpha and delta must be in (0, 1)")
        self.alpha, self.delta, self.min_size, self.window = alpha, delta, min_size, window
        self.grid = candidates(alpha)
        self.segment = 0
        self.tests = 0
        self.losses = 0
        self.kept = 0
        self.certificate: ThresholdResult | None = None
        self._wealth = _Wealth(self.grid)
        self._parts: list[_Wealth] = []  # one per critical label

    @property
    def level(self) -> float:
        return segment_level(self.delta, self.segment)

    @staticmethod
    def fewest(alpha: float, delta: float) -> int:
        """The fewest error-free calibration items that can certify anything in a run's first segment."""
        return fewest_items(alpha, segment_level(delta, 0))

    def update(self, confidence: np.ndarray | list[float], correct: np.ndarray | list[bool],
               strata: Strata = ()) -> ThresholdResult:
        conf = np.asarray(confidence, dtype=np.float64)
        ok = np.asarray(correct, dtype=bool)
        masks = tuple(np.asarray(mask, dtype=bool) for mask in strata)
        n = int(conf.shape[0])
        result = ThresholdResult(None, n, 0, 0, 1.0)
        if n >= self.min_size:
            self.tests += 1
            result = self._certified(conf, ok, masks)
        held = self.certificate
        result, kept = keep_or_replace(held, result, conf[-self.window:], ok[-self.window:], alpha=self.alpha,
                                       delta=self.delta, strata=tuple(m[-self.window:] for m in masks))
        self.kept += kept
        if result.threshold is None and held is not None:
            self.losses += 1
        self.certificate = in_force(result)
        return result

    def _certified(self, conf: np.ndarray, ok: np.ndarray, masks: Strata) -> ThresholdResult:
        """The lowest candidate whose wealth, and every higher candidate's, reached ``1 / delta_r``, overall and on
        every critical label's sub-stream."""
        goal = math.log(1.0 / self.level)
        if len(self._parts) != len(masks):
            self._parts = [_Wealth(self.grid) for _ in masks]
        passed = scan(self._wealth.fold(conf, ~ok, self.alpha, goal), self.alpha, goal)
        for part, mask in zip(self._parts, masks, strict=True):
            passed = min(passed, scan(part.fold(conf[mask], ~ok[mask], self.alpha, goal), self.alpha, goal))
        if passed < 1:
            return ThresholdResult(None, int(conf.shape[0]), 0, 0, 1.0)
        return counted_at(float(self.grid[passed - 1]), conf, ok, self.level)

    def reset(self) -> None:
        """Drift: withdraw the certificate; the next segment's e-processes run at the next segment's level."""
        if self.certificate is not None:
            self.losses += 1
        self.certificate = None
        self.segment += 1
        self._wealth, self._parts = _Wealth(self.grid), []

    def state(self) -> CertificateState:
        return CertificateState(self.tests, self.min_size, self.losses, None, segment=self.segment)

    def restore(self, state: CertificateState, certificate: ThresholdResult | None) -> None:
        """Take back a persisted state (a restarted worker decides with the same certificate)."""
        self.tests, self.losses, self.segment = state.tests, state.losses, state.segment
        self.certificate = in_force(certificate)
