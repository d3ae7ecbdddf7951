"""The cascade's rules, shared by the graph as it decides and the learner as it scores the calibration set.

Cheap tools (cost at most ``planner.cheap_cost``) vote on every item; dear ones only where their vote can change the
outcome. An item is *settled* when the cheap tools' pool reaches the policy's ``settle_level`` (fixed before any
data): it is then decided on the cheap votes alone, and its score in calibration is the cheap pool's too. Every other
item is scored by the full pool, and the graph may skip a dear tool on it only where no vote of that tool could change
the decision (:func:`could_cross`, :func:`could_fall`). The score of an item is so one fixed function of the tools'
votes, the same in the graph and in the calibration set: the certificate covers the cascade as it runs
(DESIGN-NOTES section 3).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace

import numpy as np

from agent.aggregate import AggregatorModel, softmax_rows
from agent.decisions import clears
from agent.state import ToolCall
from policies import Policy
from tools.base import Bounded, Tool, Votes, is_enrichment


def cheap_mask(policy: Policy, tools: Sequence[Tool]) -> np.ndarray:
    """(T,) bool: the tools that vote on every item."""
    return np.asarray([policy.planner.is_cheap(tool.cost) for tool in tools], dtype=bool)


def cheap_pool(aggregator: AggregatorModel, logp: np.ndarray, voted: np.ndarray,
               cheap: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The cheap tools' pool of ``logp`` (n, T, L), and per row whether any cheap tool voted."""
    cheap_voted = voted & cheap[None, :]
    return aggregator.combine(logp, cheap_voted), np.asarray(cheap_voted.any(axis=1))


def settles(proba_cheap: np.ndarray, any_cheap: np.ndarray, level: float) -> np.ndarray:
    """Rows the cheap pool settles: it voted, and its confidence reaches ``level`` (1.0 or more: none)."""
    if level >= 1.0:
        return np.zeros(len(any_cheap), dtype=bool)
    return np.asarray(any_cheap & (proba_cheap.max(axis=1) >= level))


def cascade_proba(aggregator: AggregatorModel, logp: np.ndarray, voted: np.ndarray, cheap: np.ndarray,
                  level: float) -> np.ndarray:
    """Each row's pooled probabilities as the cascade decides it: the cheap pool where it settles, else the full
    pool. What the calibration set is scored with."""
    full = aggregator.combine(logp, voted)
    if level >= 1.0 or cheap.all():
        return full
    proba_cheap, any_cheap = cheap_pool(aggregator, logp, voted, cheap)
    return np.where(settles(proba_cheap, any_cheap, level)[:, None], proba_cheap, full)


def could_cross(proba: np.ndarray, weight: float, vote: float, threshold: float) -> np.ndarray:
    """Whether one more vote of confidence ``vote`` for each row's top label lifts it to ``threshold``."""
    logits = np.log(np.clip(proba, 1e-12, 1.0))
    top = proba.argmax(axis=1)
    logits[np.arange(proba.shape[0]), top] += worst_shift(weight, vote, proba.shape[1])
    return clears(softmax_rows(logits).max(axis=1), threshold)


def could_fall(proba: np.ndarray, shift: np.ndarray, threshold: float) -> np.ndarray:
    """Whether votes still to come could take each row's top label below ``threshold``: ``shift`` (per row) is the
    most they can add to the runner-up's log-odds against the top label (:func:`worst_shift`), the worst case."""
    logits = np.log(np.clip(proba, 1e-300, 1.0))
    order = np.argsort(-logits, axis=1)
    rows = np.arange(proba.shape[0])
    logits[rows, order[:, 1]] += shift
    return ~clears(softmax_rows(logits)[rows, order[:, 0]], threshold)


def worst_shift(weight: float, vote: float, n_labels: int) -> float:
    """The most one vote at most ``vote`` sure (the rest spread evenly), pooled at ``weight``, moves one label's
    log-odds against another's: ``vote`` on the one, ``(1 - vote) / (L - 1)`` on the other."""
    return weight * float(np.log(vote) - np.log((1.0 - vote) / max(n_labels - 1, 1)))


def surest_vote(tool: Tool, policy: Policy) -> float:
    """How sure a dear tool's vote can be, for or against an item: its own ceiling (:class:`tools.base.Bounded`), or
    ``planner.best_case_vote``."""
    return tool.vote_ceiling if isinstance(tool, Bounded) else policy.planner.best_case_vote


def vote_bound(tool: Tool, policy: Policy) -> float:
    """The surest vote a tool is allowed to cast (:func:`bound_votes`): a dear tool's :func:`surest_vote`, which is
    what :func:`could_fall` takes as its worst case; 1.0 (no bound) for a cheap or enrichment tool, which votes on
    every item before anything closes."""
    if policy.planner.is_cheap(tool.cost) or is_enrichment(tool):
        return 1.0
    return surest_vote(tool, policy)


def bound_votes(votes: Votes, ceiling: float) -> Votes:
    """``votes`` no surer than ``ceiling``: each row clipped to ``[(1 - ceiling) / (L - 1), ceiling]`` and scaled back
    to sum 1 (which keeps the ratios), so no vote moves one label's log-odds against another's by more than
    ``log(ceiling (L - 1) / (1 - ceiling))``, the shift :func:`worst_shift` assumes. Without it a learned head surer
    than that (0.9999 for spam) could overturn an item the cascade closed without asking it, and the item would be
    auto-labeled on a score the certificate was not computed for. A vote already within the bound (an LLM voting its
    strength) is unchanged. Applied wherever a dear tool's votes enter the pool: the graph and the rescoring."""
    n_labels = votes.probs.shape[1]
    if ceiling >= 1.0 or n_labels < 2:
        return votes
    probs = np.clip(votes.probs, (1.0 - ceiling) / (n_labels - 1), ceiling)
    probs /= probs.sum(axis=1, keepdims=True)
    return replace(votes, probs=probs)


def shift_left(policy: Policy, tools: Sequence[Tool], aggregator: AggregatorModel, voted: np.ndarray) -> np.ndarray:
    """Per row, the most the dear tools whose vote it lacks (``voted``: (n, T) bool; a tool not yet called, or one
    that failed or abstained: the certified scorer counts a vote of each) could move its runner-up against its top
    label: each at its pool weight, voting its :func:`vote_bound`. An item so left open with nothing more to call is
    escalated as one a tool left out could overturn."""
    left = np.zeros(voted.shape[0])
    for t, tool in enumerate(tools):
        bound = vote_bound(tool, policy)
        if bound < 1.0:  # a dear tool (cheap and enrichment tools vote on every item first)
            left += worst_shift(aggregator.weight_of(tool.name), bound, len(policy.labels)) * ~voted[:, t]
    return left


def failed_unbounded(calls: Sequence[ToolCall], tools: Sequence[Tool], policy: Policy, n: int) -> np.ndarray:
    """(n,) bool: the rows a cheap voting tool's call failed on (:attr:`tools.base.Votes.failed`). Such a tool votes
    on every item before anything closes, unbounded (:func:`vote_bound`): no reckoning like :func:`shift_left` can
    say that the vote the certified scorer counts would not have changed the decision, so none of these items may be
    auto-labeled on the votes it has. An enrichment tool that failed is not counted: the voters then read the item
    without its values, as they read any item that lacks them (an input, scored by the certified scorer as it is)."""
    out = np.zeros(n, dtype=bool)
    for call in calls:
        tool = tools[call.tool_index]
        if call.votes.failed and policy.planner.is_cheap(tool.cost) and not is_enrichment(tool):
            out[call.rows] = True
    return out
