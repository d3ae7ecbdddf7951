"""The labeling agent as a LangGraph state machine: one graph run per batch, never one per item.

    (initial_state) -> plan -> act -> act ... -> record

``plan`` picks the next tool for the items still open (best learned weight per unit cost, within
the budget, skipping tools that have shown no value, sparing expensive tools for items near the
threshold); ``act`` calls it on exactly those items, pools the votes, closes the items that are decided and plans
the next call (one node: a graph step has a cost of its own). The loop is the cascade: cheap tools settle easy items
and expensive ones are spent only where they can change the outcome; its rules, shared with the learner's scoring of
the calibration set, are in :mod:`agent.cascade`. ``record`` turns the state into decisions: accept, audit (a random
share of accepts, label hidden from the reviewer) or escalate.
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from typing import Literal

import numpy as np
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from langgraph.types import Command

from agent.aggregate import log_votes
from agent.cascade import (
    bound_votes,
    cheap_mask,
    cheap_pool,
    could_cross,
    could_fall,
    failed_unbounded,
    settles,
    shift_left,
    surest_vote,
    vote_bound,
)
from agent.decisions import Evidence, clears, decide_items
from agent.ports import BatchResult, Decision
from agent.state import AgentContext, AgentSnapshot, BatchState, ReviewTrace, ToolCall
from agent.stored_votes import item_votes, tool_report
from policies import ToolError
from tools.base import Batch, Votes


def _n_labels(ctx: AgentContext) -> int:
    return len(ctx.policy.labels)


def initial_state(batch: Batch, ctx: AgentContext) -> BatchState:
    """The state a graph run starts from: nothing called yet, every item open, the exploration sample drawn.

    Computed by the caller rather than by a first node (a node was one more graph step per batch, for no
    decision: issue 18).
    """
    n, t, n_labels = len(batch), len(ctx.tools), _n_labels(ctx)
    if ctx.snapshot.threshold is None:
        explore = np.ones(n, dtype=bool)  # everything goes to a human anyway: measure every tool on it
    else:
        explore = ctx.rng.random(n) < ctx.policy.planner.explore_rate
    return {
        "batch": batch,
        "calls": [],
        "called": np.zeros((n, t), dtype=bool),
        "voted": np.zeros((n, t), dtype=bool),
        "logp": np.zeros((n, t, n_labels), dtype=np.float64),
        "spent": np.zeros(n, dtype=np.float64),
        "proba": np.full((n, n_labels), 1.0 / n_labels),
        "open": np.ones(n, dtype=bool),
        "settled": np.zeros(n, dtype=bool),
        "explore": explore,
    }


def warm_features(batch: Batch, ctx: AgentContext) -> None:
    """Let every tool compute its features on the whole batch at once (``tool.prepare``).

    Features computed while a tool predicts on ``batch.subset(rows)`` stay in that subset's cache; the
    review trace and the learner then hold items without them and recompute them item by item at every
    retrain (one hashing call per item). Computed here, every subset, trace and training set reuses them.
    A tool whose ``prepare`` fails is left to fail (and degrade) in ``act``. Called by ``plan`` once enrichment
    tools are done: features computed before would miss the metadata they add.
    """
    for tool in ctx.preparing:
        if tool is not None:
            with contextlib.suppress(ToolError):
                tool.prepare(batch)


def cheap_tools(ctx: AgentContext) -> list[int]:
    """Indices of the tools that vote on every item (cost at most ``planner.cheap_cost``)."""
    return np.nonzero(cheap_mask(ctx.policy, ctx.tools))[0].tolist()


def eligible_rows(state: BatchState, ctx: AgentContext, t: int) -> np.ndarray:
    """Rows on which tool ``t`` may be called next."""
    tool = ctx.tools[t]
    snap = ctx.snapshot
    rows = _within_budget(state, ctx, t)
    weight = snap.aggregator.weight_of(tool.name)
    if ctx.policy.planner.is_cheap(tool.cost):
        # A cheap tool votes on every item whatever its weight: a zero weight already keeps its vote out of the
        # pool, and skipping it would freeze that weight at its early, least-trained value (the pool refits
        # only on items the tool voted on), starving an accurate tool for good (DESIGN-NOTES section 13).
        return rows
    if snap.aggregator.is_measured(tool.name) and weight < ctx.policy.planner.min_tool_weight:
        rows &= state["explore"]  # no value shown: keep measuring it on the exploration sample only
    threshold = snap.threshold
    if threshold is not None and rows.any():
        # Only where the tool can change the outcome: even a confident vote for the current best label
        # must be able to lift the item over the threshold (or the item is in the exploration sample).
        rows &= could_cross(state["proba"], weight, surest_vote(tool, ctx.policy), threshold) | state["explore"]
    return rows


def enrichment_rows(state: BatchState, ctx: AgentContext, t: int) -> np.ndarray:
    """Rows an enrichment tool (``tool.enriches``) still has to see: every open item within budget.

    Enrichment tools write features other tools read (e.g. weather into metadata), so they run first
    and are never skipped for lack of a learned weight (they abstain: their value shows in the others).
    """
    return _within_budget(state, ctx, t)


def _within_budget(state: BatchState, ctx: AgentContext, t: int) -> np.ndarray:
    """Open rows tool ``t`` has not seen yet and whose spend leaves room for its cost."""
    cost = ctx.tools[t].cost
    rows: np.ndarray = state["open"] & ~state["called"][:, t] & (state["spent"] + cost <= ctx.policy.budget + 1e-9)
    return rows


async def plan(state: BatchState, runtime: Runtime[AgentContext]) -> Command[Literal["act", "record"]]:
    update = _plan(state, runtime.context)
    return Command(update=update, goto=route_plan(update))


def _plan(state: BatchState, ctx: AgentContext) -> BatchState:
    for t, enriches in enumerate(ctx.enriching):
        if enriches:
            rows = enrichment_rows(state, ctx, t)
            if rows.any():
                return {"next_tool": t, "next_rows": np.nonzero(rows)[0]}
    warm_features(state["batch"], ctx)  # after enrichment (it writes metadata features read); cached after the first
    best: tuple[tuple[bool, float], int] | None = None  # (ranking key, tool index)
    best_rows = np.zeros(0, dtype=np.int64)
    for t, tool in enumerate(ctx.tools):
        if ctx.enriching[t]:
            continue
        rows = eligible_rows(state, ctx, t)
        if not rows.any():
            continue
        weight = max(ctx.snapshot.aggregator.weight_of(tool.name), 1e-3)
        # Every cheap tool before any dear one, whatever its weight: the dear tool is asked only where the cheap
        # votes leave the item open (a cheap tool of weight 0 ranked after a dear one kept every item open for it).
        key = (ctx.policy.planner.is_cheap(tool.cost), weight / max(tool.cost, 1e-3))
        if best is None or key > best[0]:
            best, best_rows = (key, t), np.nonzero(rows)[0]
    if best is None:
        return {"next_tool": None, "next_rows": best_rows}
    return {"next_tool": best[1], "next_rows": best_rows}


def route_plan(state: BatchState) -> Literal["act", "record"]:
    return "act" if state.get("next_tool") is not None else "record"


async def act(state: BatchState, runtime: Runtime[AgentContext]) -> Command[Literal["act", "record"]]:
    """Call the planned tool, pool the votes, close the items that clear the threshold and plan the next call.

    These were four nodes (act -> aggregate -> decide -> plan); each graph step costs LangGraph's own scheduling
    and they always ran in this order, so one node does them in order on the same updated arrays (issue 18: the
    graph's share of replay time). Cheap tools that follow one another are called in this one step too: they vote on
    every open item before any can close, so a step per cheap tool changed nothing but the scheduling. ``plan`` stays
    the entry node (the first tool of the run).
    """
    ctx = runtime.context
    cheap = cheap_mask(ctx.policy, ctx.tools)
    merged: BatchState = {**state}
    update: BatchState = {"calls": []}
    while True:
        called = await _call(merged, ctx)
        update = {**update, **called, "calls": update["calls"] + called["calls"]}
        merged = {**merged, **called, "calls": merged.get("calls", []) + called["calls"]}
        cheap_left = _cheap_left(merged, ctx)
        merged["proba"] = _pool(merged, ctx)
        merged["settled"], merged["proba"] = _settle(merged, ctx, cheap_left)
        merged["open"] = _close(merged, ctx, cheap_left)
        update = {**update, "proba": merged["proba"], "open": merged["open"], "settled": merged["settled"]}
        if not merged["open"].any():
            return Command(update=update, goto="record")
        was = merged["next_tool"]
        planned = _plan(merged, ctx)
        after = planned.get("next_tool")
        if was is None or after is None or not (cheap[was] and cheap[after]) or ctx.enriching[after]:
            return Command(update={**update, **planned}, goto=route_plan(planned))
        merged, update = {**merged, **planned}, {**update, **planned}


async def _call(state: BatchState, ctx: AgentContext) -> BatchState:
    t, rows = state["next_tool"], state["next_rows"]
    assert t is not None
    tool = ctx.tools[t]
    batch = state["batch"]
    whole = len(rows) == len(batch) and np.array_equal(rows, np.arange(len(batch)))
    sub = batch if whole else batch.subset(rows)  # every row in order (cheap tools): no copy of the features
    try:
        votes = bound_votes(await tool.predict(sub, ctx.tool_context), vote_bound(tool, ctx.policy))
    except ToolError as exc:  # a failing tool degrades the items to fewer tools, never loses them (see _unsettled)
        votes = Votes.abstaining(tool.name, len(rows), _n_labels(ctx), f"{tool.name} failed: {exc}", failed=True)
    called, spent = state["called"].copy(), state["spent"].copy()
    voted, logp = state["voted"].copy(), state["logp"].copy()
    called[rows, t] = True
    spent[rows] += votes.cost
    ok = ~votes.abstain
    voted[rows, t] = ok
    logp[rows[ok], t, :] = log_votes(votes.probs[ok])
    return {"calls": [ToolCall(t, rows, votes)], "called": called, "spent": spent, "voted": voted, "logp": logp}


def _pool(state: BatchState, ctx: AgentContext) -> np.ndarray:
    """The pooled probabilities after the last call: the rows it touched are combined again (a settled row keeps the
    cheap pool that settled it: a dear vote asked for the exploration sample teaches, it does not decide)."""
    rows = state["next_rows"]
    rows = rows[~state["settled"][rows]]
    proba = state["proba"].copy()
    proba[rows] = ctx.snapshot.aggregator.combine(state["logp"][rows], state["voted"][rows])
    return proba


def _cheap_left(state: BatchState, ctx: AgentContext) -> np.ndarray:
    """Rows on which a cheap tool has still to vote."""
    left = np.zeros(len(state["batch"]), dtype=bool)
    for t in cheap_tools(ctx):
        left |= eligible_rows(state, ctx, t)
    return left


def _settle(state: BatchState, ctx: AgentContext, cheap_left: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Rows whose cheap votes are all in and whose cheap pool reaches ``policy.settle_level`` are settled: decided on
    that pool, whatever a dear tool would say (:mod:`agent.cascade`). Before and after calibration alike: the score
    of an item must not depend on the threshold in force."""
    settled, proba = state["settled"], state["proba"]
    t = state["next_tool"]
    cheap = cheap_mask(ctx.policy, ctx.tools)
    if t is None or not cheap[t] or cheap.all() or ctx.policy.settle_level >= 1.0:
        return settled, proba
    rows = state["next_rows"]
    rows = rows[~settled[rows] & ~cheap_left[rows]]
    pooled, any_cheap = cheap_pool(ctx.snapshot.aggregator, state["logp"][rows], state["voted"][rows], cheap)
    now = settles(pooled, any_cheap, ctx.policy.settle_level)
    if not now.any():
        return settled, proba
    settled, proba = settled.copy(), proba.copy()
    settled[rows[now]] = True
    proba[rows[now]] = pooled[now]
    return settled, proba


def _close(state: BatchState, ctx: AgentContext, cheap_left: np.ndarray) -> np.ndarray:
    """The items still open. Outside the exploration sample, once every cheap tool voted: a settled item closes
    (decided on the cheap pool); another closes when its pooled confidence clears the threshold, unless a dear tool
    whose vote it lacks (not yet called, or failed) could still take it below (:func:`agent.cascade.could_fall`).
    The calibration set is scored the same way (:func:`agent.cascade.cascade_proba`), so the certificate covers what
    decides (DESIGN-NOTES section 3).
    """
    is_open: np.ndarray = state["open"]
    done: np.ndarray = state["settled"].copy()
    if ctx.snapshot.threshold is not None:
        clear = clears(state["proba"].max(axis=1), ctx.snapshot.threshold) & np.asarray(state["voted"].any(axis=1))
        shift = shift_left(ctx.policy, ctx.tools, ctx.snapshot.aggregator, state["voted"])
        if shift.any():  # no dear tool left (a lexical policy): nothing to check
            clear &= ~could_fall(state["proba"], shift, ctx.snapshot.threshold)
        done |= clear
    closing: np.ndarray = ~state["explore"] & ~cheap_left & done
    still: np.ndarray = is_open & ~closing
    return still


def _flags(state: BatchState, ctx: AgentContext) -> dict[int, str]:
    """Rows a tool marked for review (e.g. suspected prompt injection) -> the first such tool's name."""
    flagged: dict[int, str] = {}
    for call in state["calls"]:
        if call.votes.review is not None:
            for j in np.nonzero(call.votes.review)[0].tolist():
                flagged.setdefault(int(call.rows[j]), ctx.tools[call.tool_index].name)
    return flagged


def _evidence(state: BatchState, ctx: AgentContext) -> list[Evidence]:
    """What :func:`agent.decisions.verdict` reads about each item of the batch, in order."""
    labels = ctx.tool_context.labels
    n = len(state["batch"])
    proba = state["proba"]
    conf = proba.max(axis=1).tolist()
    pred = proba.argmax(axis=1).tolist()
    any_vote = np.asarray(state["voted"].any(axis=1)).tolist()
    always = {labels.index(lab) for lab in ctx.policy.always_review}
    audit_draw = (ctx.rng.random(n) < ctx.snapshot.audit_rate).tolist()
    flagged = _flags(state, ctx)
    unsettled = _unsettled(state, ctx).tolist()
    return [Evidence(label=labels[pred[i]] if any_vote[i] else None, confidence=conf[i] if any_vote[i] else 0.0,
                     voted=any_vote[i], always_reviewed=pred[i] in always, flagged_by=flagged.get(i),
                     audit_draw=audit_draw[i], unsettled=unsettled[i])
            for i in range(n)]


def _unsettled(state: BatchState, ctx: AgentContext) -> np.ndarray:
    """Items left open with no tool to call (a dear one over budget or skipped for want of value) that a vote of such
    a tool could take below the threshold, and items a cheap voting tool failed on (:func:`failed_unbounded`): the
    calibration set scores them with those votes, so they must not be auto-labeled on the votes they have."""
    is_open = state["open"] & ~state["settled"]
    threshold = ctx.snapshot.threshold
    out: np.ndarray = failed_unbounded(state["calls"], ctx.tools, ctx.policy, len(is_open))
    if threshold is None or not is_open.any():
        return out
    shift = shift_left(ctx.policy, ctx.tools, ctx.snapshot.aggregator, state["voted"])
    out |= is_open & (shift > 0) & could_fall(state["proba"], shift, threshold)
    return out


def _trace(state: BatchState, evidence: list[Evidence], decisions: list[Decision], snap: AgentSnapshot) -> ReviewTrace:
    """The decision-time evidence of the items sent to a human, for the learner."""
    reviewed = [i for i, d in enumerate(decisions) if d.review_kind is not None]
    rows = np.asarray(reviewed, dtype=np.int64)
    return ReviewTrace(
        batch=state["batch"].subset(rows),
        logp=state["logp"][rows],
        voted=state["voted"][rows],
        confidence=np.asarray([evidence[i].confidence for i in reviewed], dtype=np.float64),
        predicted=[decisions[i].label for i in reviewed],
        kinds=[kind for i in reviewed if (kind := decisions[i].review_kind) is not None],
        would_accept=np.asarray([evidence[i].would_accept(snap.threshold) for i in reviewed], dtype=bool),
        trained_on=snap.trained_on,
    )


def _drift_plan(evidence: list[Evidence], ctx: AgentContext) -> tuple[int, list[Evidence]]:
    """The drift monitor, asked before the batch is decided (i14): the row its alarm reaches (the batch's length
    without an alarm; from there on nothing is auto-labeled and the items go to review as after an alarm), and the
    evidence with ``held`` set where the monitor's evidence of a shift already makes auto labels wait."""
    threshold = ctx.snapshot.threshold
    if ctx.monitor is None or threshold is None:
        return len(evidence), evidence
    rows = [i for i, e in enumerate(evidence) if e.label is not None and not e.always_reviewed]
    below = [evidence[i].confidence < threshold for i in rows]
    k, holds = ctx.monitor.plan(below)
    out = list(evidence)
    for i, held in zip(rows, holds, strict=True):
        if held:
            out[i] = replace(out[i], held=True)
    return (len(evidence) if k is None else rows[k]), out


async def record(state: BatchState, runtime: Runtime[AgentContext]) -> BatchState:
    ctx = runtime.context
    snap = ctx.snapshot
    batch = state["batch"]
    stop, evidence = _drift_plan(_evidence(state, ctx), ctx)
    keys, votes = [item.key for item in batch.items], item_votes(state["calls"], ctx.tools, ctx.tool_context.labels,
                                                                 len(batch))
    decisions = (decide_items(keys[:stop], evidence[:stop], votes[:stop], state["spent"][:stop], snap.threshold)
                 + decide_items(keys[stop:], evidence[stop:], votes[stop:], state["spent"][stop:], None))
    calls, failures = tool_report(state["calls"], ctx.tools)
    result = BatchResult(policy_key=ctx.policy.key, threshold=snap.threshold, model_versions=dict(snap.tool_versions),
                         decisions=decisions, tool_calls=calls, snapshot_id=snap.stored_id, tool_failures=failures)
    return {"result": result, "trace": _trace(state, evidence, decisions, snap)}


LabelingGraph = CompiledStateGraph[BatchState, AgentContext, BatchState, BatchState]


def build_graph() -> LabelingGraph:
    """The compiled labeling graph. Build once and reuse: it holds no per-project state.

    ``plan`` and ``act`` route with ``Command(goto=...)`` rather than conditional edges: a conditional edge
    is one more runnable per step (and a sync router runs in a thread pool), ~35% of the graph's own cost.
    """
    g = StateGraph(BatchState, context_schema=AgentContext)
    g.add_node("plan", plan)
    g.add_node("act", act)
    g.add_node("record", record)
    g.add_edge(START, "plan")
    g.add_edge("record", END)
    return g.compile()
