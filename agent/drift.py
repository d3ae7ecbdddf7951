"""A label-free drift monitor: the share of eligible items that fall below the certified threshold.

The calibration set samples the stream, so a certificate also says what share of the stream should land
below its threshold: ``q = 1 - n_above / n_calibration``. On a stationary stream (and a scorer that only gets
better) the live share stays at or under ``q``; when new kinds of items arrive that the models have never seen
(new intents, a new sensor), most of them land below the threshold at once. No label is needed to see it.

The test is a CUSUM of a betting martingale (a restarted test of ``H0: share <= q + margin``): after each
eligible item, ``W <- max(0, W + log(1 + lam (x - q')))`` with ``x`` 1 when the item fell below the threshold;
under ``H0`` each factor has expectation at most 1, so ``W`` reaching ``log(1 / FALSE_ALARM)`` has the
average-run-length guarantee of CUSUM (at least ``1 / FALSE_ALARM`` items between false alarms when the share
never exceeds ``q'``). ``lam`` is the Kelly bet against a share ``q' + SHIFT``.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from agent.ports import Decision

MARGIN = 0.10  # absolute share above the certificate's own before the monitor counts it as evidence
SHIFT = 0.30  # the jump the bet is sized for
FALSE_ALARM = 1e-4  # alarm at W >= log(1 / FALSE_ALARM): average run length >= 10,000 items under H0
MAX_SHARE = 0.95
# Auto-labeling pauses (items escalated, certificate kept) while W >= HOLD: the evidence of a rise is 20 to 1. W's
# stationary tail is about exp(-h) at the H0 boundary, so on a stationary stream this holds back at most ~5% of the
# eligible items (far fewer at the certificate's own share); after a shift it reaches HOLD in a third of the items
# the alarm needs.
HOLD = math.log(20.0)
# The certificate's share below comes from out-of-fold confidences, which can sit far above the live share (banking77:
# 0.63 below against 0.2 live, the models improve after the certificate), so a rise of the live share stays under its
# bound. After every block of LIVE_ITEMS eligible items, once LIVE_BLOCKS blocks were seen under the certificate, the
# bound is the lower of the certificate's share and the highest live share of the last LIVE_BLOCKS blocks, plus
# MARGIN: the reference the stream itself showed just before (the highest of several, as retrains move the share).
LIVE_ITEMS = 256
LIVE_BLOCKS = 4


@dataclass(frozen=True, slots=True)
class MonitorState:
    reference: float | None  # the certificate's share below its threshold (None: no certificate to watch)
    statistic: float  # the CUSUM statistic W
    limit: float  # alarm level log(1 / FALSE_ALARM)
    items: int  # eligible items watched since the reference was set
    below: int  # ... of which below the threshold
    alarms: int  # alarms raised so far
    last_alarm_item: int | None  # the monitor's item count (all items ever watched) at the last alarm


class EscalationMonitor:
    """Watches the share of eligible items below the threshold in force; ``watch`` returns True on an alarm."""

    def __init__(self) -> None:
        self._reference: float | None = None
        self._bound = 0.0
        self._lam = 0.0
        self._w = 0.0
        self._items = self._below = 0
        self.alarms = 0
        self.seen = 0  # every item watched, with or without a reference
        self.last_alarm_item: int | None = None
        self.limit = math.log(1.0 / FALSE_ALARM)

    def set_reference(self, share_below: float | None) -> None:
        """A new certificate (or none): the statistic restarts against its share below the threshold."""
        self._reference = share_below
        self._w = 0.0
        self._items = self._below = 0
        self._block = 0  # items below the threshold in the current block of LIVE_ITEMS
        self._blocks: tuple[int, ...] = ()  # items below in each of the last LIVE_BLOCKS blocks
        if share_below is not None:
            self._bound, self._lam = _bet(share_below)

    def watch(self, below: list[bool]) -> bool:
        """Feed one batch's eligible items (True: below the threshold). An alarm clears the reference."""
        self.seen += len(below)
        if self._reference is None:
            return False
        up = math.log1p(self._lam * (1.0 - self._bound))
        down = math.log1p(-self._lam * self._bound)
        for x in below:
            self._items += 1
            self._below += x
            self._w = max(0.0, self._w + (up if x else down))
            if self._w >= self.limit:
                self.alarms += 1
                self.last_alarm_item = self.seen
                self.set_reference(None)
                return True
            self._block += x
            if self._items % LIVE_ITEMS == 0:  # a block ends: the bound follows the live share just seen
                self._blocks = (*self._blocks, self._block)[-LIVE_BLOCKS:]
                self._bound, self._lam = self._live_bet(self._blocks)
                self._block = 0
                up, down = _steps(self._bound, self._lam)
        return False

    def _live_bet(self, blocks: tuple[int, ...]) -> tuple[float, float]:
        """The bound and bet after a block (``blocks``: items below in the last blocks): the certificate's share until
        ``LIVE_BLOCKS`` blocks were seen, then the lower of it and the highest block share."""
        reference = self._reference if self._reference is not None else 1.0
        if len(blocks) < LIVE_BLOCKS:
            return _bet(reference)
        return _bet(min(reference, max(blocks) / LIVE_ITEMS))

    @property
    def holding(self) -> bool:
        """The statistic is at ``HOLD`` or more: auto labels wait, and no new certificate replaces the one watched."""
        return self._reference is not None and self._w >= HOLD

    def plan(self, below: Sequence[bool]) -> tuple[int | None, list[bool]]:
        """Where the batch's auto labels wait, asked before it is decided (the whole batch is known then).

        With ``S`` the statistic's running sum over the batch (not floored at zero; ``S = 0`` before the first item,
        ``-W`` the lowest point before the batch) the statistic is ``W_i = S_i - min_{j <= i} S_j``. When it reaches
        ``HOLD`` at item ``i``, the change may have come at any item after a point where ``S`` was within ``HOLD`` of
        that minimum (a likelihood-ratio set for the change point, the CUSUM estimate, the last zero, included):
        every item from the earliest such point up to ``i`` waits. Returns (where that set starts for the alarm, or
        None without an alarm: from there on nothing is auto-labeled; for each item whether it waits). Changes
        nothing."""
        if self._reference is None:
            return None, [False] * len(below)
        out = [False] * len(below)
        steps, n, b, blocks = _steps(self._bound, self._lam), self._items, self._block, self._blocks
        sums, low = [0.0], -self._w  # sums[p]: S just before item p
        for i, x in enumerate(below):
            sums.append(sums[-1] + (steps[0] if x else steps[1]))
            low = min(low, sums[-1])
            w = sums[-1] - low
            if w >= HOLD:
                # the set starts before the batch (index 0) when the lowest point before it (-W) is in the set
                start = 0 if -self._w <= low + HOLD else next(p for p, v in enumerate(sums) if v <= low + HOLD)
                out[start:i + 1] = [True] * (i + 1 - start)
                if w >= self.limit:
                    out[start:] = [True] * (len(below) - start)
                    return start, out
            n, b = n + 1, b + x
            if n % LIVE_ITEMS == 0:  # as watch follows the live share after a block
                blocks = (*blocks, b)[-LIVE_BLOCKS:]
                steps, b = _steps(*self._live_bet(blocks)), 0
        return None, out

    def state(self) -> MonitorState:
        return MonitorState(self._reference, self._w, self.limit, self._items, self._below, self.alarms,
                            self.last_alarm_item)


def _steps(bound: float, lam: float) -> tuple[float, float]:
    """The statistic's step up (an item below the threshold) and down."""
    return math.log1p(lam * (1.0 - bound)), math.log1p(-lam * bound)


def _bet(share_below: float) -> tuple[float, float]:
    """(the H0 bound on the share below, the Kelly bet against a share SHIFT above it)."""
    bound = min(MAX_SHARE, share_below + MARGIN)
    alt = min(0.999, bound + SHIFT)
    return bound, min((alt - bound) / (bound * (1.0 - bound)), 0.9 / bound)


def eligible_below(decisions: Sequence[Decision], threshold: float, always_review: Collection[str]) -> list[bool]:
    """For each item that could be auto-labeled (it has a label that is not always reviewed): below ``threshold``?"""
    return [d.confidence < threshold for d in decisions if d.label is not None and d.label not in always_review]
