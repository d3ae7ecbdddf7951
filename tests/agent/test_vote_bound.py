"""A dear tool's votes are bounded where they enter the pool, so the cascade's worst case is a fact, not an assumption.

The graph closes an item without calling a dear tool when no vote of that tool could take it below the threshold
(``agent.cascade.could_fall``), reckoning each vote at most ``surest_vote`` sure with the rest spread evenly. A learned
head can be surer (0.9999 for spam): such a vote against a closed item would move it further than reckoned, and the
item would be auto-labeled on a score the certificate (computed on every tool's vote) was not computed for.
"""

from __future__ import annotations

import asyncio
from dataclasses import replace

import numpy as np

from agent.aggregate import AggregatorModel, log_votes
from agent.cascade import bound_votes, could_fall, shift_left, vote_bound, worst_shift
from agent.decisions import clears
from agent.ports import GroundTruth
from agent.runner import BatchLabeler
from tests.agent.fixtures import CountingLearner, TableTool
from tests.factories import make_items, make_policy
from tools.base import Votes


def _votes(probs: np.ndarray) -> Votes:
    n = probs.shape[0]
    return Votes("enc", probs, np.zeros(n, dtype=bool), np.zeros(n), [""] * n)


def test_a_bounded_vote_moves_log_odds_at_most_as_the_cascade_reckons() -> None:
    rng = np.random.default_rng(1)
    for n_labels in (2, 7, 77):
        raw = rng.dirichlet(np.full(n_labels, 0.05), size=500)  # mostly near one-hot: surer than any bound
        lp = log_votes(bound_votes(_votes(raw), 0.99).probs)
        assert np.allclose(np.exp(lp).sum(axis=1), 1.0, atol=1e-3)
        reckoned = worst_shift(1.0, 0.99, n_labels)
        assert (lp.max(axis=1) - lp.min(axis=1)).max() <= reckoned + 1e-9
        unbounded = log_votes(raw)
        assert (unbounded.max(axis=1) - unbounded.min(axis=1)).max() > reckoned + 0.1  # the raw votes exceed it
        at_ceiling = np.full((1, n_labels), 0.01 / (n_labels - 1))
        at_ceiling[0, 0] = 0.99  # an LLM voting its strength: already within the bound, left as it is
        np.testing.assert_allclose(bound_votes(_votes(at_ceiling), 0.99).probs, at_ceiling)
    assert bound_votes(_votes(raw), 1.0).probs is raw  # no bound (a cheap tool): the votes as cast


def test_an_item_closed_without_the_dear_tool_stays_above_the_threshold_whatever_it_votes() -> None:
    policy = make_policy(planner={"cheap_cost": 1.0})
    cheap, dear = TableTool("cheap", {}, cost=0.5), TableTool("dear", {}, cost=5.0)
    tools = (cheap, dear)
    assert vote_bound(cheap, policy) == 1.0 and vote_bound(dear, policy) == policy.planner.best_case_vote
    aggregator = replace(AggregatorModel.default(("cheap", "dear"), 2), weights=np.array([1.0, 0.4]))
    rng = np.random.default_rng(2)
    n, threshold = 5_000, 0.9
    p = 1.0 - 10.0 ** -rng.uniform(0.3, 4.0, n)  # the cheap confidence, its log-odds from 0.7 to 9.2
    logp = np.zeros((n, 2, 2))
    logp[:, 0] = log_votes(np.stack([p, 1.0 - p], axis=1))  # the cheap tool's vote: ham, at confidence p
    voted = np.zeros((n, 2), dtype=bool)
    voted[:, 0] = True
    proba = aggregator.combine(logp, voted)
    shift = shift_left(policy, tools, aggregator, voted)
    closed = clears(proba.max(axis=1), threshold) & ~could_fall(proba, shift, threshold)
    assert 0.05 * n < closed.sum() < 0.95 * n
    against = np.tile([1e-6, 1.0 - 1e-6], (n, 1))  # the dear tool, far surer than reckoned, says spam on every item

    def full_pool(dear_probs: np.ndarray) -> np.ndarray:
        both, on = logp.copy(), np.ones((n, 2), dtype=bool)
        both[:, 1] = log_votes(dear_probs)
        return aggregator.combine(both, on)[:, 0]  # ham's pooled probability with both votes

    bounded = bound_votes(_votes(against), vote_bound(dear, policy)).probs
    assert (full_pool(bounded)[closed] >= threshold - 1e-9).all()  # what the cascade decided is what the pool decides
    assert (full_pool(against)[closed] < threshold).any()  # unbounded, the same vote overturns items it closed


def test_the_graph_pools_and_records_a_dear_tools_votes_bounded() -> None:
    items = make_items(40)
    sure = {it.key: {"ham": 1.0 - 1e-7, "spam": 1e-7} for it in items}
    cheap, dear = TableTool("cheap", {it.key: {"ham": 0.6, "spam": 0.4} for it in items}, cost=0.5), \
        TableTool("dear", sure, cost=5.0)
    specs = [{"name": "cheap", "kind": "text_classifier", "cost": 0.5},
             {"name": "dear", "kind": "text_classifier", "cost": 5.0}]
    policy = make_policy(tools=specs, planner={"cheap_cost": 1.0})
    lab = BatchLabeler(policy, [cheap, dear], seed=0)
    result = asyncio.run(lab.run_batch(items))  # cold start: every tool votes on every item
    surest = policy.planner.best_case_vote
    dear_votes = [v.distribution for d in result.decisions for v in d.votes if v.tool == "dear"]
    cheap_votes = [v.distribution for d in result.decisions for v in d.votes if v.tool == "cheap"]
    assert len(dear_votes) == len(items) and all(dist is not None and max(dist.values()) <= surest + 1e-9
                                                 for dist in dear_votes)
    assert all(dist == {"ham": 0.6, "spam": 0.4} for dist in cheap_votes)  # a cheap tool's votes as cast
    pending = lab.learner.pending[items[0].key]
    assert np.exp(pending.logp[1]).max() <= surest + 1e-9  # the trace the learner keeps, bounded alike


def test_the_rescoring_bounds_a_dear_learning_tools_fold_votes_as_the_graph_does() -> None:
    items = make_items(240)
    rng = np.random.default_rng(4)
    sure = {it.key: ({"ham": 1.0 - 1e-7, "spam": 1e-7} if rng.random() < 0.7 else {"ham": 1e-7, "spam": 1.0 - 1e-7})
            for it in items}
    cheap = TableTool("cheap", {it.key: {"ham": 0.6, "spam": 0.4} for it in items}, cost=0.5)
    dear = CountingLearner("dear", sure, cost=5.0)  # learns (fold copies vote from the same table), votes surer
    specs = [{"name": "cheap", "kind": "text_classifier", "cost": 0.5},
             {"name": "dear", "kind": "text_classifier", "cost": 5.0}]
    policy = make_policy(tools=specs, planner={"cheap_cost": 1.0}, min_calibration=100)
    lab = BatchLabeler(policy, [cheap, dear], seed=0)
    decided = {d.key: d.confidence for d in asyncio.run(lab.run_batch(items)).decisions}
    learner = lab.learner
    learner.observe([GroundTruth(it, max(sure[it.key], key=sure[it.key].__getitem__)) for it in items])
    learner.retrain(force_rescore=True)  # the fold copies vote again on every calibration item
    assert learner.rescores == 1
    rescored = {learner._gt_keys[r]: c for r, c in zip(learner._iid_rows, learner._iid_conf, strict=True)}
    pool = learner.snapshot.aggregator
    both = np.asarray([[[0.6, 0.4], [sure[k]["ham"], sure[k]["spam"]]] for k in rescored])
    surest = policy.planner.best_case_vote
    both[:, 1] = np.clip(both[:, 1], 1.0 - surest, surest)
    expected = pool.combine(log_votes(both), np.ones((len(rescored), 2), dtype=bool)).max(axis=1)
    assert len(rescored) >= 100 and decided  # a cold-start sample, rescored
    np.testing.assert_allclose(list(rescored.values()), expected)
