"""The one place that decides an item's fate: accept, audit (a hidden-label check of an accept) or escalate.

``agent.graph`` calls :func:`clears` while the cascade runs (to close the items that are done) and
:func:`decide_items` once at the end (to write the decisions); both apply the same accept rule.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from agent.ports import Action, Decision, ReviewKind
from tools.base import Vote

FLAGGED_PREFIX = "flagged for review by"  # agent/queue_order.py tells operator escalations by it
COLD_START_REASON = "cold start: not enough calibration yet"
COLD_START_PRIORITY = 1.5  # calibration samples: below audits (2.0), above every other review

def clears(confidence: np.ndarray | float, threshold: float | None) -> np.ndarray:
    """The accept rule: the pooled confidence reaches the calibrated threshold (none before calibration)."""
    if threshold is None:
        return np.zeros(np.shape(confidence), dtype=bool)
    return np.asarray(np.asarray(confidence) >= threshold)


@dataclass(frozen=True, slots=True)
class Verdict:
    action: Action
    reason: str
    review_kind: ReviewKind | None = None  # for escalate/audit: why a human sees it
    priority: float = 0.0  # higher first in the review queue


@dataclass(frozen=True, slots=True)
class Evidence:
    """What the rule reads about one item at the end of the graph run."""

    label: str | None  # the pooled top label (None when no tool voted)
    confidence: float  # its pooled probability (0 when no tool voted)
    voted: bool  # some tool voted
    always_reviewed: bool  # the policy sends this label to a human every time
    flagged_by: str | None  # a tool marked the item for review (e.g. suspected prompt injection)
    audit_draw: bool  # the item fell in the random audit sample
    held: bool = False  # i14: the drift monitor's evidence of a shift is strong: auto labels wait (agent/drift.py)
    # a dear tool left uncalled (budget, no measured value) could still take it below the threshold: the certified
    # scorer, which counts that tool's vote, might not accept it (agent/cascade.py)
    unsettled: bool = False

    def would_accept(self, threshold: float | None) -> bool:
        """Accepted but for the audit draw and the flags: the audits of auto labels measure exactly these."""
        return (threshold is not None and self.voted and bool(clears(self.confidence, threshold))
                and not self.always_reviewed)


def verdict(e: Evidence, threshold: float | None) -> Verdict:
    """Accept, audit or escalate one item, with the reason a reviewer reads and the review queue's priority."""
    c = e.confidence
    if e.flagged_by is not None:
        return Verdict("escalate", f"{FLAGGED_PREFIX} {e.flagged_by}", "escalation", 1.0)
    if threshold is None:
        return Verdict("escalate", COLD_START_REASON, "cold_start", COLD_START_PRIORITY)
    if not e.voted:
        return Verdict("escalate", "no tool could vote", "escalation", 1.0)
    if e.always_reviewed:
        return Verdict("escalate", f"label {e.label!r} is always reviewed", "escalation", 1.0 - c / 2)
    if e.audit_draw:  # a uniform sample of the whole stream: the i.i.d. calibration data of the guarantee
        return Verdict("audit", "random audit (label hidden from reviewer)", "audit", 2.0)
    if e.held and e.would_accept(threshold):
        return Verdict("escalate", f"drift watch: confidence {c:.3f} >= {threshold:.3f} but the share below the "
                                   "threshold is rising", "escalation", 1.0 - c)
    if e.unsettled and e.would_accept(threshold):
        return Verdict("escalate", f"confidence {c:.3f} >= {threshold:.3f}, but a tool left out could overturn it",
                       "escalation", 1.0 - c)
    if e.would_accept(threshold):
        return Verdict("accept", f"confidence {c:.3f} >= {threshold:.3f}")
    return Verdict("escalate", f"confidence {c:.3f} < {threshold:.3f}", "escalation", 1.0 - c)


def decide_items(keys: Sequence[str], evidence: Sequence[Evidence], votes: Sequence[list[Vote]],
                 costs: np.ndarray, threshold: float | None) -> list[Decision]:
    """One :class:`Decision` per item, in order."""
    out: list[Decision] = []
    for key, e, item_votes, cost in zip(keys, evidence, votes, costs.tolist(), strict=True):
        v = verdict(e, threshold)
        out.append(Decision(key=key, action=v.action, label=e.label if e.voted else None,
                            confidence=e.confidence, votes=item_votes, reason=v.reason, cost=float(cost),
                            review_kind=v.review_kind, priority=v.priority))
    return out
