"""What reaches a human, and in which order, when reviewers are finite (issue 20).

Three rules, each switched by :class:`QueueRule` (``QueueRule.plain()``: all off, the queue as before):

- **Cold start samples.** While no certificate exists, a cold-start item is a calibration sample only while fewer
  than :func:`calibration_target` calibration samples wait unanswered; the others are recorded as escalations that
  wait for the agent (re-decided once a certificate exists). Which items are samples depends on counts only (how
  many samples are outstanding), never on the item, so the answered samples stay a uniform draw of the stream.
  With reviewers who keep up (the replay's oracle) nothing is outstanding and every cold-start item is a sample.
  Once a certificate exists, the samples nobody has claimed are *released* (``RELEASED_REASON``): they become waiting
  escalations, decided again with the others at the certified threshold (like new items: they are a uniform draw),
  and their answers, if a human still gives them, do not calibrate. Reviewers claim samples oldest first (one
  priority), so the answered samples are the first ones, up to a time fixed by earlier answers: still a uniform draw.
  Waiting items are never handed to reviewers (the claim skips ``WAITING_REASON``): when no sample is left
  unanswered and still no certificate exists, the oldest waiting items are *promoted* to samples
  (``service/runtime/waiting.py``), so an import, whose items all arrive before anyone answers, does not run out of
  samples. On a stream the samples are refilled by arrivals and nothing is promoted. Promotion goes by arrival order
  and counts only, so the answered samples stay a uniform draw; that is also why reviewers may not pick waiting
  items by their learning value meanwhile. Without the cap (``QueueRule(sample_cold_start=False)``) every
  cold-start item is a sample, but reviewers slower than a stream then answer only old items, decided by young
  models (DESIGN-NOTES section 16, eighteenth and nineteenth sessions).
- **Order.** Operator reviews come first: audits (2.0), calibration samples (1.5), flagged items (1.2), labels
  always reviewed (1.0 to 1.1). The learning part of the queue (escalations) is ordered by the value of an answer
  to the agent, in ``[0, 1)``: see :func:`learning_value`.
- **Re-decision** (``agent/redecide.py``): open escalations are decided again by each new certified snapshot.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from agent.certificate import fewest_to_certify
from agent.decisions import FLAGGED_PREFIX
from agent.ports import WAITING_REASON, Decision
from agent.state import ReviewTrace
from policies import InputError, Policy

FLAGGED_PRIORITY = 1.2
ALWAYS_PRIORITY = 1.0  # ... plus a tenth of the agent's doubt
LEARNING_CAP = 0.99  # the learning part of the queue stays below every operator review
# Weights of the learning value's parts (uncertainty, few labels, diversity); DESIGN-NOTES section 16.
WEIGHTS = (0.5, 0.3, 0.2)
_WORDS = re.compile(r"[a-z0-9]+")


@dataclass(frozen=True, slots=True)
class QueueRule:
    sample_cold_start: bool = True
    order: bool = True
    redecide: bool = True
    release: bool = True  # with ``redecide``: release the unclaimed cold-start samples when a certificate comes

    def __post_init__(self) -> None:
        if self.sample_cold_start and not self.redecide:
            raise InputError("queue part 'sample' needs 'redecide': items that wait during cold start are never "
                             "handed to reviewers, only promoted to samples or decided again by the agent")

    @classmethod
    def plain(cls) -> QueueRule:
        """Every cold-start item is a calibration sample, the verdict's fixed priorities, no re-decision."""
        return cls(False, False, False, False)

    @classmethod
    def parse(cls, parts: str) -> QueueRule:
        """``"sample,order,redecide,release"`` (any subset, comma-separated; empty: :meth:`plain`), for
        comparisons."""
        names = {p.strip() for p in parts.split(",") if p.strip()}
        known = ("sample", "order", "redecide", "release")
        unknown = names - set(known)
        if unknown:
            raise InputError(f"unknown queue parts {sorted(unknown)}; use {', '.join(known)}")
        return cls(*(name in names for name in known))


def calibration_target(policy: Policy) -> int:
    """Calibration samples allowed to wait unanswered at once during cold start: the fewest that can certify under
    the policy's rule."""
    return max(policy.min_calibration, fewest_to_certify(policy))


def calibration_quota(policy: Policy, outstanding: int) -> int:
    """How many more cold-start items may become calibration samples now."""
    return max(0, calibration_target(policy) - outstanding)


def is_operator(d: Decision, policy: Policy) -> bool:
    """Escalations the operator asks for (flagged by a tool, a label always reviewed): not the learning queue."""
    return d.reason.startswith(FLAGGED_PREFIX) or (d.label is not None and d.label in policy.always_review)


def shape_batch(decisions: Sequence[Decision], trace: ReviewTrace, *, policy: Policy, rule: QueueRule,
                threshold: float | None, outstanding: int, label_counts: np.ndarray,
                texts: Mapping[str, str | None]) -> int:
    """Apply the cold-start sampling and the order to one graph run's decisions (in place) and keep the review
    trace's kinds in step. ``outstanding``: calibration samples still unanswered. Returns the items turned from
    cold-start samples into waiting escalations."""
    waiting = 0
    if threshold is None and rule.sample_cold_start:
        quota = calibration_quota(policy, outstanding)
        for d in decisions:
            if d.review_kind != "cold_start":
                continue
            if quota > 0:
                quota -= 1
                continue
            d.review_kind, d.action, d.reason = "escalation", "escalate", WAITING_REASON
            d.priority = 1.0 - d.confidence  # the verdict's escalation priority (below every sample)
            waiting += 1
    if rule.order:
        prioritize(decisions, policy=policy, label_counts=label_counts, texts=texts)
    if waiting:
        trace.kinds = [d.review_kind for d in decisions if d.review_kind is not None]
    return waiting


def prioritize(decisions: Sequence[Decision], *, policy: Policy, label_counts: np.ndarray,
               texts: Mapping[str, str | None]) -> None:
    """Set the queue priority of every escalation in ``decisions`` (in place); other kinds keep theirs."""
    learning = [d for d in decisions if d.review_kind == "escalation" and not is_operator(d, policy)]
    for d in decisions:
        if d.review_kind == "escalation" and is_operator(d, policy):
            flagged = d.reason.startswith(FLAGGED_PREFIX)
            d.priority = FLAGGED_PRIORITY if flagged else ALWAYS_PRIORITY + (1.0 - d.confidence) / 10
    if not learning:
        return
    values = learning_value(learning, policy=policy, label_counts=label_counts, texts=texts)
    for d, v in zip(learning, values.tolist(), strict=True):
        d.priority = round(LEARNING_CAP * v, 6)


def learning_value(decisions: Sequence[Decision], *, policy: Policy, label_counts: np.ndarray,
                   texts: Mapping[str, str | None]) -> np.ndarray:
    """The value of a human answer to the agent, in ``[0, 1]``, a weighted mean of three parts:

    - *uncertainty*: ``1 - confidence`` (the agent knows least; also what it could never take over itself);
    - *few labels*: ``1 / sqrt(1 + n)`` for ``n`` answers of the suggested label so far (rare classes first);
    - *diversity*: within the ranked group, the ``k``-th item with the same suggested label, or the same words,
      counts ``1 / sqrt(1 + k)`` (not fifty near-copies of one message in a row).
    """
    labels = {lab: i for i, lab in enumerate(policy.labels)}
    conf = np.asarray([d.confidence for d in decisions], dtype=np.float64)
    uncertainty = 1.0 - conf
    counts = np.asarray([label_counts[labels[d.label]] if d.label in labels else 0 for d in decisions],
                        dtype=np.float64)
    scarce = 1.0 / np.sqrt(1.0 + counts)
    order = np.argsort(-(WEIGHTS[0] * uncertainty + WEIGHTS[1] * scarce), kind="stable")
    seen_label: Counter[str | None] = Counter()
    seen_text: Counter[str] = Counter()
    diverse = np.ones(len(decisions))
    for i in order.tolist():
        d = decisions[i]
        raw = texts.get(d.key)
        text = " ".join(_WORDS.findall(raw.lower())) if raw else ""
        repeats = seen_label[d.label] + (4 * seen_text[text] if text else 0)
        diverse[i] = 1.0 / np.sqrt(1.0 + repeats)
        seen_label[d.label] += 1
        if text:
            seen_text[text] += 1
    total = WEIGHTS[0] * uncertainty + WEIGHTS[1] * scarce + WEIGHTS[2] * diverse
    return np.clip(total / sum(WEIGHTS), 0.0, 1.0)
