"""RandomVoter: a reproducible, uniform, confident-looking control voter."""

from __future__ import annotations

import numpy as np

from policies.model import RandomSpec
from tests.tools.helpers import predict
from tools.base import Item, Learnable, Tool
from tools.random_voter import RandomVoter

LABELS = ("a", "b", "c", "d")
ITEMS = [Item(str(i), f"text {i}") for i in range(4000)]


def test_votes_are_uniform_over_labels_with_the_given_strength() -> None:
    tool = RandomVoter(RandomSpec(name="random", strength=0.7, seed=3), LABELS)
    assert isinstance(tool, Tool) and not isinstance(tool, Learnable)
    votes = predict(tool, ITEMS, LABELS)
    assert not votes.abstain.any()
    np.testing.assert_allclose(votes.probs.max(axis=1), 0.7)
    np.testing.assert_allclose(votes.probs.sum(axis=1), 1.0)
    assert np.isclose(votes.probs, 0.1).sum() == 3 * len(ITEMS)
    counts = np.bincount(votes.probs.argmax(axis=1), minlength=len(LABELS))
    chi2 = float(((counts - 1000) ** 2 / 1000).sum())
    assert chi2 < 16.3, counts  # p = 0.001 for 3 degrees of freedom
    assert votes.evidence[0].startswith("random: random ") and votes.evidence[0].endswith("0.70 (control voter)")


def test_same_seed_same_votes_other_seed_other_votes() -> None:
    def run_with(seed: int) -> np.ndarray:
        tool = RandomVoter(RandomSpec(name="random", seed=seed), LABELS)
        return np.concatenate([predict(tool, ITEMS[:100], LABELS).probs, predict(tool, ITEMS[100:200], LABELS).probs])

    first, again, other = run_with(1), run_with(1), run_with(2)
    np.testing.assert_array_equal(first, again)
    assert (first.argmax(axis=1) != other.argmax(axis=1)).mean() > 0.5
    # consecutive calls keep drawing: the second batch is not a copy of the first
    assert (first[:100].argmax(axis=1) != first[100:].argmax(axis=1)).any()
