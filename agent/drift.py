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
        return False

    @property
    def holding(self) -> bool:
        """The statistic is at ``HOLD`` or more: auto labels wait, and no new certificate replaces the one watched."""
        return self._reference is not None and self._w >= HOLD

    def first_alarm(self, below: Sequence[bool]) -> int | None:
        """Where in ``below`` the next :meth:`watch` would alarm (index of the item that crosses), without changing
        anything: the graph asks before deciding, so the items from the alarm on are not auto-labeled."""
        if self._reference is None:
            return None
        up = math.log1p(self._lam * (1.0 - self._bound))
        down = math.log1p(-self._lam * self._bound)
        w = self._w
        for i, x in enumerate(below):
            w = max(0.0, w + (up if x else down))
            if w >= self.limit:
                return i
        return None

    def held(self, below: Sequence[bool]) -> list[bool]:
        """For each item of ``below``: whether the statistic before it was at ``HOLD`` or more (or the alarm came):
        its auto label waits. Changes nothing (the graph asks before deciding)."""
        if self._reference is None:
            return [False] * len(below)
        up = math.log1p(self._lam * (1.0 - self._bound))
        down = math.log1p(-self._lam * self._bound)
        w, out, alarmed = self._w, [], False
        for x in below:
            out.append(alarmed or w >= HOLD)
            w = max(0.0, w + (up if x else down))
            alarmed = alarmed or w >= self.limit
        return out

    def state(self) -> MonitorState:
        return MonitorState(self._reference, self._w, self.limit, self._items, self._below, self.alarms,
                            self.last_alarm_item)


def _bet(share_below: float) -> tuple[float, float]:
    """(the H0 bound on the share below, the Kelly bet against a share SHIFT above it)."""
    bound = min(MAX_SHARE, share_below + MARGIN)
    alt = min(0.999, bound + SHIFT)
    return bound, min((alt - bound) / (bound * (1.0 - bound)), 0.9 / bound)


def eligible_below(decisions: Sequence[Decision], threshold: float, always_review: Collection[str]) -> list[bool]:
    """For each item that could be auto-labeled (it has a label that is not always reviewed): below ``threshold``?"""
    return [d.confidence < threshold for d in decisions if d.label is not None and d.label not in always_review]
