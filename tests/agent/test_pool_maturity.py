"""The pool is fitted for the models that decide next: a row's vote counts by how many labels its deciding models
had (``agent.aggregate.maturity_weights``), so votes cast by untrained or barely trained models (an import's) do
not set the weights of the models that replaced them; a restarted learner weighs its rows the same way."""

from __future__ import annotations

import numpy as np
import pytest

from agent.aggregate import AggregatorModel, fit_aggregator, maturity_weights
from agent.learner import Learner
from agent.ports import GroundTruth
from agent.state import ReviewTrace
from tests.agent.fixtures import CountingLearner
from tests.factories import make_items, make_policy
from tools.base import Batch


def test_maturity_weights() -> None:
    w = maturity_weights([0, 50, 100, None, 300], 100)
    assert w.tolist() == pytest.approx([1 / 101, 51 / 101, 1.0, 1.0, 1.0])


def _votes(rng: np.random.Generator, y: np.ndarray, right: float) -> np.ndarray:
    """(n, 2) log-probabilities of a confident voter right on a share ``right`` of the rows."""
    top = np.where(rng.random(y.shape[0]) < right, y, 1 - y)
    probs = np.where(np.arange(2)[None, :] == top[:, None], 0.95, 0.05)
    return np.log(probs)


def test_rows_from_young_models_weigh_little_in_the_pool() -> None:
    """Tool 0 was untrained on the first 300 rows (right on half) and is right on 95% of the last 100; tool 1 is
    right on 80% throughout. Weighted by maturity, the pool trusts tool 0 as the models that decide next deserve;
    weighting the young rows down comes close to fitting on the mature rows alone; equal weights are no weights."""
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 400)
    logp = np.stack([np.concatenate([_votes(rng, y[:300], 0.5), _votes(rng, y[300:], 0.95)]),
                     _votes(rng, y, 0.8)], axis=1)
    voted = np.ones((400, 2), dtype=bool)
    base = AggregatorModel.default(("young", "steady"), 2)
    counts = np.bincount(y, minlength=2).astype(np.float64)
    plain = fit_aggregator(base, logp, voted, y, counts)
    assert fit_aggregator(base, logp, voted, y, counts, row_weights=np.full(400, 3.0)).weights == pytest.approx(
        plain.weights)
    trained = [0] * 300 + [400] * 100
    weighted = fit_aggregator(base, logp, voted, y, counts, row_weights=maturity_weights(trained, 400))
    mature = fit_aggregator(base, logp[300:], voted[300:], y[300:], counts)
    assert weighted.weight_of("young") > 2 * plain.weight_of("young")
    # close to the fit on the mature rows alone (the young rows keep a weight of 1 / 401 each)
    gap = abs(weighted.weight_of("young") - mature.weight_of("young"))
    assert gap < abs(plain.weight_of("young") - mature.weight_of("young")) / 4


def _answers(learner: Learner, items: list, trained_on: int, rng: np.random.Generator) -> list[GroundTruth]:  # type: ignore[type-arg]
    n = len(items)
    y = rng.integers(0, 2, n)
    logp = np.stack([_votes(rng, y, 0.9)], axis=1)
    learner.remember(ReviewTrace(Batch(items), logp, np.ones((n, 1), bool), np.full(n, 0.9), ["ham"] * n,
                                 ["escalation"] * n, np.zeros(n, bool), trained_on=trained_on))
    return [GroundTruth(it, ("ham", "spam")[label]) for it, label in zip(items, y.tolist(), strict=True)]


def test_a_restored_learner_weighs_the_pool_as_the_one_that_never_stopped() -> None:
    """A learner that saw the answers live and one loaded from storage (votes with their models' training rows)
    fit the same pool; without the training rows the loaded one would weigh every row fully, and fit another."""
    policy = make_policy(min_calibration=60)
    rng = np.random.default_rng(5)
    items = make_items(300)
    live = Learner(policy, [CountingLearner("clf", {})])
    answers = []
    for start, trained_on in ((0, 0), (100, 20), (200, 180)):
        part = _answers(live, items[start:start + 100], trained_on, rng)
        live.observe(part)
        answers += part
    votes = {gt.item.key: (live._gt_logp[r], live._gt_voted[r])  # type: ignore[misc]
             for r, gt in enumerate(answers)}
    trained = {gt.item.key: k for gt, k in zip(answers, [0] * 100 + [20] * 100 + [180] * 100, strict=True)}
    restored, blind = (Learner(policy, [CountingLearner("clf", {})]) for _ in range(2))
    restored.load(answers, [], votes, trained)
    blind.load(answers, [], votes)
    assert restored._fit_aggregator(300).weights == pytest.approx(live._fit_aggregator(300).weights)
    assert blind._fit_aggregator(300).weights != pytest.approx(live._fit_aggregator(300).weights)
