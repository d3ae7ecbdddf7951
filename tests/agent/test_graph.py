"""Graph routing: the cascade, budgets, cold start, audits, failures; one graph run per batch."""

from __future__ import annotations

import asyncio
from dataclasses import replace

import numpy as np
import pytest

from agent.aggregate import AggregatorModel
from agent.calibration import ThresholdResult
from agent.runner import BatchLabeler
from agent.state import AgentSnapshot
from tests.agent.fixtures import TableTool
from tests.factories import make_items, make_policy

SURE = {"ham": 0.999, "spam": 0.001}
UNSURE = {"ham": 0.6, "spam": 0.4}


def labeler(tools, threshold: float | None, **policy_over) -> BatchLabeler:  # type: ignore[no-untyped-def]
    specs = [{"name": t.name, "kind": "text_classifier", "cost": t.cost} for t in tools]
    fields = {"tools": specs, "audit_rate": 0.0, **policy_over}
    fields.setdefault("planner", {"explore_rate": 0.0})
    policy = make_policy(**fields)
    lab = BatchLabeler(policy, tools, seed=0)
    names = tuple(t.name for t in tools)
    agg = AggregatorModel(names, np.ones(len(tools)), 0.0, np.log(np.full(2, 0.5)))
    lab.learner.snapshot = AgentSnapshot(agg, ThresholdResult(threshold, 500, 500, 0, 0.01),
                                         policy.audit_rate if threshold is not None else 1.0)
    return lab


def run(lab: BatchLabeler, items):  # type: ignore[no-untyped-def]
    return asyncio.run(lab.run_batch(items))


def test_cascade_stops_early_on_easy_items() -> None:
    items = make_items(10)
    easy = {it.key: SURE for it in items[:7]}
    hard = {it.key: UNSURE for it in items[7:]}
    cheap = TableTool("cheap", {**easy, **hard}, cost=1.0)
    costly = TableTool("costly", {it.key: SURE for it in items}, cost=10.0)
    lab = labeler([cheap, costly], threshold=0.99, budget=20)
    measured(lab, [3.0, 1.0])  # even a sure vote of the costly tool against an easy item leaves it above 0.99
    result = run(lab, items)
    assert result.tool_calls == {"cheap": 10, "costly": 3}
    assert sorted(costly.seen) == sorted(hard)  # the expensive tool only where it could matter
    accepted = {d.key for d in result.decisions if d.action == "accept"}
    assert set(easy) <= accepted
    assert all(d.label == "ham" for d in result.decisions)


def test_a_dear_tool_that_could_overturn_a_cheap_decision_is_asked() -> None:
    """The calibration set is scored with every tool's vote: an item may close on the cheap tools alone only if no
    vote of the dear tool could take it below the threshold, or the certificate would not be for the scorer that
    decides (DESIGN-NOTES section 3)."""
    items = make_items(10)
    cheap = TableTool("cheap", {it.key: SURE for it in items}, cost=1.0)
    costly = TableTool("costly", {it.key: ({"ham": 0.001, "spam": 0.999} if i < 2 else SURE)
                                  for i, it in enumerate(items)}, cost=10.0)
    lab = labeler([cheap, costly], threshold=0.99, budget=20)
    measured(lab, [1.0, 1.0])  # a sure vote against can take a sure cheap vote to 0.5
    result = run(lab, items)
    assert result.tool_calls == {"cheap": 10, "costly": 10}
    actions = [d.action for d in result.decisions]
    assert actions[:2] == ["escalate", "escalate"] and set(actions[2:]) == {"accept"}
    measured(lab, [3.0, 1.0])
    assert run(lab, items).tool_calls == {"cheap": 10, "costly": 0}  # no vote of it could now: the cascade stops


def test_an_item_the_cheap_pool_settles_is_decided_on_it_even_where_the_dear_tool_is_asked() -> None:
    """At ``settle_confidence`` the cheap pool decides (agent/cascade.py): no dear tool outside the exploration sample,
    and on it the dear vote teaches without deciding, so the item scores the same whichever sample it fell in."""
    items = make_items(10)
    cheap = TableTool("cheap", {it.key: (SURE if i < 6 else UNSURE) for i, it in enumerate(items)}, cost=1.0)
    against = {"ham": 0.001, "spam": 0.999}
    costly = TableTool("costly", {it.key: against for it in items}, cost=10.0)
    lab = labeler([cheap, costly], threshold=0.99, budget=20, planner={"explore_rate": 0.0, "settle_confidence": 0.995})
    measured(lab, [1.0, 1.0])
    result = run(lab, items)
    assert result.tool_calls == {"cheap": 10, "costly": 4}  # the six settled items never reach the dear tool
    assert [d.action for d in result.decisions[:6]] == ["accept"] * 6
    assert {d.label for d in result.decisions[:6]} == {"ham"}
    explored = labeler([cheap, costly], threshold=0.99, budget=20,
                       planner={"explore_rate": 1.0, "settle_confidence": 0.995})
    measured(explored, [1.0, 1.0])
    again = run(explored, items)
    assert again.tool_calls == {"cheap": 10, "costly": 10}
    assert [(d.action, d.label, d.confidence) for d in again.decisions[:6]] == [
        (d.action, d.label, d.confidence) for d in result.decisions[:6]]
    off = labeler([cheap, costly], threshold=0.99, budget=20)  # settling is off by default
    measured(off, [1.0, 1.0])
    assert run(off, items).tool_calls == {"cheap": 10, "costly": 10}  # off: the dear vote against could overturn


class BoundedTableTool(TableTool):
    """A table tool whose votes are never surer than ``ceiling`` (as an LLM voting its ``strength``)."""

    def __init__(self, *args, ceiling: float, **kwargs) -> None:  # type: ignore[no-untyped-def]
        super().__init__(*args, **kwargs)
        self.ceiling = ceiling

    @property
    def vote_ceiling(self) -> float:
        return self.ceiling


def test_a_dear_tool_that_is_never_sure_enough_to_overturn_an_item_is_not_asked() -> None:
    items = make_items(10)
    cheap = TableTool("cheap", {it.key: SURE for it in items}, cost=1.0)
    vague = {it.key: {"ham": 0.4, "spam": 0.6} for it in items}
    bounded = BoundedTableTool("llm", vague, cost=10.0, ceiling=0.6)
    lab = labeler([cheap, bounded], threshold=0.99, budget=20)
    measured(lab, [1.0, 1.0])
    assert run(lab, items).tool_calls == {"cheap": 10, "llm": 0}  # 0.6 against 0.999 leaves 0.998
    unbounded = TableTool("llm", vague, cost=10.0)  # as sure as best_case_vote, for all the planner knows
    lab = labeler([cheap, unbounded], threshold=0.99, budget=20)
    measured(lab, [1.0, 1.0])
    assert run(lab, items).tool_calls == {"cheap": 10, "llm": 10}


def test_escalates_when_budget_runs_out() -> None:
    items = make_items(6)
    cheap = TableTool("cheap", {it.key: UNSURE for it in items}, cost=1.0)
    costly = TableTool("costly", {it.key: SURE for it in items}, cost=10.0)
    lab = labeler([cheap, costly], threshold=0.99, budget=5)
    result = run(lab, items)
    assert costly.seen == []
    assert [d.action for d in result.decisions] == ["escalate"] * 6
    assert all(d.review_kind == "escalation" and d.label == "ham" for d in result.decisions)
    assert all(d.cost == pytest.approx(1.0) for d in result.decisions)


def test_an_item_a_tool_over_budget_could_overturn_is_not_auto_labeled() -> None:
    """The calibration set scores every item with every learning tool's vote; an item the budget kept from the dear
    tool is auto-labeled only if no vote of that tool could take it below the threshold."""
    items = make_items(6)
    cheap = TableTool("cheap", {it.key: SURE for it in items}, cost=1.0)
    costly = TableTool("costly", {it.key: SURE for it in items}, cost=10.0)
    lab = labeler([cheap, costly], threshold=0.99, budget=5)
    measured(lab, [1.0, 1.0])  # a sure vote of the costly tool against could take 0.999 to 0.5
    result = run(lab, items)
    assert costly.seen == []
    assert [d.action for d in result.decisions] == ["escalate"] * 6
    assert all("left out could overturn" in d.reason for d in result.decisions)
    measured(lab, [3.0, 1.0])  # now no vote of it could: accepted on the cheap vote
    assert [d.action for d in run(lab, items).decisions] == ["accept"] * 6


def test_cold_start_escalates_everything_and_measures_every_tool() -> None:
    items = make_items(5)
    a = TableTool("a", {it.key: SURE for it in items}, cost=1.0)
    b = TableTool("b", {it.key: SURE for it in items}, cost=10.0)
    lab = labeler([a, b], threshold=None, budget=20)
    result = run(lab, items)
    assert {d.action for d in result.decisions} == {"escalate"}
    assert {d.review_kind for d in result.decisions} == {"cold_start"}
    assert result.tool_calls == {"a": 5, "b": 5}


def test_one_graph_run_per_batch_and_decisions_in_order() -> None:
    items = make_items(300)
    tool = TableTool("a", {it.key: SURE for it in items})
    lab = labeler([tool], threshold=0.9)
    calls = []
    original = lab.graph.ainvoke

    async def counting(*args, **kwargs):  # type: ignore[no-untyped-def]
        calls.append(1)
        return await original(*args, **kwargs)

    lab.graph.ainvoke = counting  # type: ignore[method-assign]
    result = run(lab, items)
    assert len(calls) == 1
    assert [d.key for d in result.decisions] == [it.key for it in items]


def test_no_vote_means_escalation_with_reason() -> None:
    items = make_items(3)
    lab = labeler([TableTool("a", {})], threshold=0.5)
    result = run(lab, items)
    assert all(d.action == "escalate" and d.label is None and "no tool" in d.reason for d in result.decisions)


def test_failing_tool_degrades_without_losing_items() -> None:
    """Every item is decided, the failure in its votes; a cheap tool's failure sends them to a human (below)."""
    items = make_items(4)
    down = TableTool("down", {}, cost=0.5, fail=True)
    ok = TableTool("ok", {it.key: SURE for it in items}, cost=1.0)
    lab = labeler([down, ok], threshold=0.99)
    result = run(lab, items)
    assert [d.key for d in result.decisions] == [it.key for it in items]
    assert all(d.action == "escalate" and d.label == "ham" for d in result.decisions)
    assert list(result.tool_failures) == ["down"] and "down is down" in result.tool_failures["down"]
    assert all(any(v.tool == "down" and v.abstained and "down is down" in v.evidence for v in d.votes)
               for d in result.decisions)


def test_always_review_labels_are_escalated() -> None:
    items = make_items(4)
    tool = TableTool("a", {it.key: {"ham": 0.001, "spam": 0.999} for it in items})
    lab = labeler([tool], threshold=0.9, always_review=["spam"])
    result = run(lab, items)
    assert all(d.action == "escalate" and "always reviewed" in d.reason for d in result.decisions)


def test_audits_sample_the_stream_and_hide_nothing_from_the_record() -> None:
    items = make_items(400)
    tool = TableTool("a", {it.key: SURE for it in items})
    lab = labeler([tool], threshold=0.9, audit_rate=0.1)
    lab.learner.snapshot = replace(lab.learner.snapshot, audit_rate=0.1)
    result = run(lab, items)
    audits = [d for d in result.decisions if d.action == "audit"]
    assert 20 <= len(audits) <= 65  # ~10% of 400
    assert all(d.review_kind == "audit" and d.label == "ham" for d in audits)
    assert len(audits) + len(result.by_action("accept")) == 400


def measured(lab: BatchLabeler, weights: list[float]) -> None:
    """Put pool weights in force as if each tool had been measured on 100 reviewed items."""
    snap = lab.learner.snapshot
    agg = replace(snap.aggregator, weights=np.array(weights), fitted_on=100,
                  votes_seen=np.full(len(weights), 100))
    lab.learner.snapshot = replace(snap, aggregator=agg)


def test_useless_dear_tool_is_skipped_once_measured() -> None:
    items = make_items(8)
    good = TableTool("good", {it.key: UNSURE for it in items}, cost=1.0)
    useless = TableTool("useless", {it.key: SURE for it in items}, cost=5.0)
    lab = labeler([good, useless], threshold=0.99, budget=20)
    measured(lab, [1.0, 0.0])
    result = run(lab, items)
    assert result.tool_calls["useless"] == 0
    assert result.tool_calls["good"] == 8


def test_cheap_tool_with_zero_weight_still_votes_on_every_item() -> None:
    """A cheap tool is never starved: its weight, fitted only on items it voted on, must be able to recover."""
    items = make_items(8)
    zero = TableTool("zero", {it.key: UNSURE for it in items}, cost=0.5)
    dear = TableTool("dear", {it.key: SURE for it in items}, cost=5.0)
    lab = labeler([zero, dear], threshold=0.99, budget=20)
    measured(lab, [0.0, 2.0])
    result = run(lab, items)
    assert result.tool_calls == {"zero": 8, "dear": 8}
    assert all(any(v.tool == "zero" and not v.abstained for v in d.votes) for d in result.decisions)


def test_every_cheap_tool_votes_before_a_dear_one_whatever_its_weight() -> None:
    """A zero-weight cheap tool ranked after a dear one kept every item open for the dear tool (it was called on all
    of them): the cheap ones vote first, and the dear one only where their votes leave the item open."""
    items = make_items(10)
    strong = TableTool("strong", {it.key: (SURE if i < 7 else UNSURE) for i, it in enumerate(items)}, cost=0.5)
    zero = TableTool("zero", {it.key: UNSURE for it in items}, cost=0.5)
    dear = TableTool("dear", {it.key: SURE for it in items}, cost=5.0)
    lab = labeler([strong, zero, dear], threshold=0.99, budget=20, planner={"explore_rate": 0.0, "cheap_cost": 1.0})
    measured(lab, [3.0, 0.0, 1.0])  # the dear tool's weight per cost (0.2) beats the zero-weight cheap tool's
    result = run(lab, items)
    assert result.tool_calls == {"strong": 10, "zero": 10, "dear": 3}
    assert sorted(dear.seen) == sorted(it.key for it in items[7:])


def test_an_item_whose_dear_tool_failed_is_auto_labeled_only_if_no_vote_of_it_could_overturn_it() -> None:
    """The certified scorer counts the dear tool's vote: an item it failed on has no such vote, and is auto-labeled on
    the cheap votes only where no vote of that tool could have taken it below the threshold."""
    items = make_items(6)
    cheap = TableTool("cheap", {it.key: SURE for it in items}, cost=1.0)
    down = TableTool("down", {}, cost=10.0, fail=True)
    lab = labeler([cheap, down], threshold=0.99, budget=20)
    measured(lab, [1.0, 1.0])  # a sure vote of the dear tool against could take 0.999 to 0.5: it is asked, and fails
    result = run(lab, items)
    assert [d.action for d in result.decisions] == ["escalate"] * 6
    assert all("left out could overturn" in d.reason for d in result.decisions)
    assert all(any(v.tool == "down" and v.abstained for v in d.votes) for d in result.decisions)
    measured(lab, [3.0, 1.0])  # now no vote of it could: accepted on the cheap vote, the dear tool not asked
    assert [d.action for d in run(lab, items).decisions] == ["accept"] * 6


def test_an_item_a_cheap_tool_failed_on_is_never_auto_labeled() -> None:
    """A cheap tool votes on every item, unbounded: the certified scorer counts its vote, and no reckoning can say the
    vote it owes would not have changed the decision. Its items are escalated (the other cheap tool alone would have
    accepted them), with the call recorded as failed; another batch with the tool back is accepted as before."""
    items = make_items(6)
    sure = TableTool("sure", {it.key: SURE for it in items}, cost=1.0)
    down = TableTool("down", {}, cost=1.0, fail=True)
    lab = labeler([sure, down], threshold=0.9)
    result = run(lab, items)
    assert [d.action for d in result.decisions] == ["escalate"] * 6
    assert all("left out could overturn" in d.reason for d in result.decisions)
    assert all(any(v.tool == "down" and v.abstained and "failed" in v.evidence for v in d.votes)
               for d in result.decisions)
    lab = labeler([sure, TableTool("down", {it.key: SURE for it in items}, cost=1.0)], threshold=0.9)
    back = run(lab, items)
    assert [d.action for d in back.decisions] == ["accept"] * 6 and back.tool_failures == {}


def test_cheap_tools_vote_in_one_graph_step_and_each_dear_one_in_its_own() -> None:
    """Cheap tools vote on every open item before any can close, so ``act`` calls them one after the other in one
    step (a LangGraph step each cost scheduling and changed nothing); a dear tool, asked where it can change the
    outcome, gets a step of its own. The votes are recorded in the order the tools were called."""
    from agent.graph import initial_state
    from agent.state import AgentContext
    from tools.base import Batch

    items = make_items(10)
    cheap = [TableTool(name, {it.key: UNSURE for it in items}, cost=1.0) for name in ("c1", "c2", "c3")]
    dear = TableTool("dear", {it.key: SURE for it in items}, cost=10.0)
    lab = labeler([*cheap, dear], threshold=0.99, budget=20)
    measured(lab, [1.0, 1.0, 1.0, 1.0])
    snap = lab.learner.snapshot
    context = AgentContext(lab.policy, lab.learner.tools, snap, lab.rng, lab.tool_context, lab.learner.monitor)

    async def steps() -> tuple[list[str], list[str]]:
        names, called = [], []
        async for chunk in lab.graph.astream(initial_state(Batch(items), context), context=context,
                                             stream_mode="updates"):
            for node, update in chunk.items():
                names.append(node)
                called += [context.tools[c.tool_index].name for c in (update or {}).get("calls", [])]
        return names, called

    names, called = asyncio.run(steps())
    assert names == ["plan", "act", "act", "record"]
    assert called == ["c1", "c2", "c3", "dear"]
    assert run(lab, items).tool_calls == {"c1": 10, "c2": 10, "c3": 10, "dear": 10}
