"""Issue 20 in the agent: cold-start samples capped by count, the queue's learning order, re-decision of waiting
items (only with a certificate, never an audit)."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest

from agent.calibration import ThresholdResult
from agent.ports import GroundTruth
from agent.queue_order import (
    LEARNING_CAP,
    WAITING_REASON,
    QueueRule,
    calibration_target,
    learning_value,
    prioritize,
)
from agent.redecide import due, redecide
from agent.runner import BatchLabeler
from policies import InputError
from tests.agent.fixtures import TableTool
from tests.agent.test_graph import SURE, UNSURE, labeler
from tests.factories import make_decision, make_items, make_policy


def cold_labeler(items: list, rule: QueueRule | None = None) -> BatchLabeler:  # type: ignore[type-arg]
    tool = TableTool("cheap", {it.key: (UNSURE if i % 3 else SURE) for i, it in enumerate(items)})
    lab = labeler([tool], threshold=None)
    if rule is not None:
        lab.queue = rule
    return lab


def test_without_the_cap_every_cold_start_item_is_a_sample() -> None:
    items = make_items(400)
    lab = cold_labeler(items, QueueRule(sample_cold_start=False))
    result = asyncio.run(lab.run_batch(items))
    assert [d.review_kind for d in result.decisions] == ["cold_start"] * len(items)  # far past the cap's target
    assert lab.learner.pending.outstanding("cold_start") == len(items)
    assert len({d.priority for d in result.decisions}) == 1  # one priority: reviewers take them oldest first


def test_cold_start_samples_stop_at_the_target_and_resume_when_answered() -> None:
    items = make_items(400)
    lab = cold_labeler(items)
    target = calibration_target(lab.policy)
    first = asyncio.run(lab.run_batch(items[:target + 30]))
    kinds = [d.review_kind for d in first.decisions]
    assert kinds[:target] == ["cold_start"] * target  # the first ones in arrival order, whatever their confidence
    assert kinds[target:] == ["escalation"] * 30
    assert all(d.reason == WAITING_REASON for d in first.decisions[target:])
    pending = lab.learner.pending
    assert pending.outstanding("cold_start") == target and pending.outstanding("escalation") == 30
    more = asyncio.run(lab.run_batch(items[target + 30:target + 40]))
    assert {d.review_kind for d in more.decisions} == {"escalation"}  # the samples still wait: no more
    answered = [GroundTruth(it, "ham") for it in items[:20]]
    lab.learner.observe(answered)
    again = asyncio.run(lab.run_batch(items[target + 40:target + 60]))
    assert [d.review_kind for d in again.decisions] == ["cold_start"] * 20  # 20 answered: 20 new samples


def test_plain_queue_keeps_every_cold_start_item_a_sample() -> None:
    items = make_items(300)
    lab = cold_labeler(items, QueueRule.plain())
    result = asyncio.run(lab.run_batch(items))
    assert {d.review_kind for d in result.decisions} == {"cold_start"}
    assert {d.priority for d in result.decisions} == {1.5}


def test_operator_reviews_come_before_the_learning_queue() -> None:
    policy = make_policy(always_review=["spam"])
    ds = [make_decision("a", "escalate", label="ham", confidence=0.1, review_kind="escalation"),
          make_decision("b", "escalate", label="spam", confidence=0.9, review_kind="escalation"),
          make_decision("c", "escalate", label="ham", confidence=0.9, review_kind="escalation"),
          make_decision("d", "audit", label="ham", confidence=0.99, review_kind="audit", priority=2.0)]
    ds[2].reason = "flagged for review by guard"
    prioritize(ds, policy=policy, label_counts=np.zeros(2), texts={})
    by = {d.key: d.priority for d in ds}
    assert by["d"] == 2.0  # audits keep theirs
    assert by["c"] > by["b"] >= 1.0 > LEARNING_CAP >= by["a"] >= 0.0  # flagged, always reviewed, then learning


def test_learning_value_prefers_doubt_rare_labels_and_no_repeats() -> None:
    policy = make_policy(labels=["ham", "spam", "eggs"])
    sure = make_decision("sure", "escalate", label="ham", confidence=0.9, labels=policy.labels)
    doubt = make_decision("doubt", "escalate", label="ham", confidence=0.4, labels=policy.labels)
    rare = make_decision("rare", "escalate", label="eggs", confidence=0.9, labels=policy.labels)
    counts = np.asarray([400, 400, 0])
    v = learning_value([sure, doubt, rare], policy=policy, label_counts=counts, texts={})
    assert v[1] > v[0] and v[2] > v[0]
    copies = [make_decision(f"k{i}", "escalate", label="ham", confidence=0.5, labels=policy.labels) for i in range(6)]
    texts = {f"k{i}": "WIN a prize now!!" if i < 5 else "see you at noon" for i in range(6)}
    vals = learning_value(copies, policy=policy, label_counts=counts, texts=texts)
    assert vals[5] > vals[3]  # the one different message beats the fourth copy of the same one
    assert np.all((vals >= 0.0) & (vals <= 1.0))


def waiting_labeler(threshold: float | None, audit_rate: float = 0.0) -> tuple[BatchLabeler, list]:  # type: ignore[type-arg]
    items = make_items(40)
    tool = TableTool("cheap", {it.key: (SURE if i % 2 else UNSURE) for i, it in enumerate(items)})
    lab = labeler([tool], threshold=threshold, audit_rate=audit_rate)
    return lab, items


def test_redecision_accepts_nothing_without_a_certificate() -> None:
    lab, items = waiting_labeler(None)
    assert not due(lab, None)
    out = asyncio.run(redecide(lab, items))
    assert out.accepted == [] and out.snapshot.threshold is None


@pytest.mark.parametrize("audit_rate", [0.0, 1.0])
def test_redecision_accepts_what_clears_and_never_audits(audit_rate: float) -> None:
    lab, items = waiting_labeler(0.99, audit_rate)
    lab.learner.snapshot = type(lab.learner.snapshot)(
        lab.learner.snapshot.aggregator, ThresholdResult(0.99, 500, 500, 0, 0.01), audit_rate)
    assert due(lab, None)
    out = asyncio.run(redecide(lab, items))
    assert {d.key for d in out.accepted} == {it.key for i, it in enumerate(items) if i % 2}
    assert all(d.confidence >= 0.99 for d in out.accepted)
    assert {d.action for d in out.waiting} == {"escalate"}  # no audit draw on waiting items
    assert all(0.0 <= d.priority < 1.0 for d in out.waiting)
    assert not due(lab, out.snapshot)  # the same snapshot does not decide twice


def test_redecision_is_off_in_the_plain_queue() -> None:
    lab, _ = waiting_labeler(0.99)
    lab.queue = QueueRule.plain()
    assert not due(lab, None)


def test_queue_rule_parts_parse_for_comparisons() -> None:
    assert QueueRule.parse("sample,order,redecide,release") == QueueRule()
    assert QueueRule.parse("sample,order,redecide") == QueueRule(release=False)
    assert QueueRule.parse("order,redecide,release") == QueueRule(sample_cold_start=False)
    assert QueueRule.parse("") == QueueRule.plain()
    assert QueueRule.parse(" redecide ") == QueueRule(False, False, True, False)
    with pytest.raises(InputError, match="unknown queue parts"):
        QueueRule.parse("sample,teach")


def test_waiting_cold_start_items_queue_below_the_samples_even_unordered() -> None:
    items = make_items(300)
    lab = cold_labeler(items, QueueRule(sample_cold_start=True, order=False, redecide=True))
    result = asyncio.run(lab.run_batch(items))
    samples = [d.priority for d in result.decisions if d.review_kind == "cold_start"]
    waiting = [d.priority for d in result.decisions if d.review_kind == "escalation"]
    assert samples and waiting and min(samples) > max(waiting)


def test_redecision_asks_the_target_precision_of_each_item_too() -> None:
    lab, items = waiting_labeler(0.5)  # UNSURE (0.6) clears this threshold: a new item would be accepted
    out = asyncio.run(redecide(lab, items))
    bar = max(0.5, lab.policy.target_precision)
    assert {d.key for d in out.accepted} == {it.key for i, it in enumerate(items) if i % 2}  # SURE ones only
    kept = [d for d in out.waiting if d.confidence >= 0.5]
    assert kept and all(d.action == "escalate" and d.confidence < bar for d in kept)
    assert all(d.review_kind == "escalation" and 0.0 <= d.priority < 1.0 for d in kept)


def test_items_that_waited_through_cold_start_need_only_the_certified_threshold() -> None:
    lab, items = waiting_labeler(0.5)  # UNSURE (0.6) clears the threshold but not the target precision
    unscreened = {it.key for it in items[:20]}
    out = asyncio.run(redecide(lab, items, unscreened=unscreened))
    accepted = {d.key for d in out.accepted}
    assert accepted >= unscreened  # set aside by count, never screened: the certified threshold is their bar
    assert accepted - unscreened == {it.key for i, it in enumerate(items[20:], 20) if i % 2}  # screened: SURE only
    assert all(d.confidence >= 0.5 for d in out.accepted)


def test_cold_start_samples_need_the_re_decision() -> None:
    """Items that wait during cold start are never handed to reviewers: without re-decision they would wait
    forever, so that combination is refused."""
    with pytest.raises(InputError, match="needs 'redecide'"):
        QueueRule.parse("sample,order")
    with pytest.raises(InputError, match="needs 'redecide'"):
        QueueRule(sample_cold_start=True, redecide=False)
