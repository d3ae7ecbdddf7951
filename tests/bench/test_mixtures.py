"""``python -m bench mixtures``: the alternative priors it compares are mixtures of likelihood ratios, and its
zero-error cell is the count the certifier itself uses."""

from __future__ import annotations

import math

import numpy as np
import pytest

from agent.betting import fewest_items, segment_level
from bench.mixtures import PRIORS, grid, mean_stop


def test_a_grid_is_the_equal_weight_average_of_likelihood_ratios() -> None:
    alpha, shares = 0.05, (0.75, 0.5, 0.25)
    for n, e in [(0, 0), (80, 0), (300, 4), (900, 60)]:
        direct = sum(s ** e * ((1 - s * alpha) / (1 - alpha)) ** (n - e) for s in shares) / len(shares)
        got = grid(shares)(np.array([float(n)]), np.array([float(e)]), alpha)[0]
        assert float(got) == pytest.approx(math.log(direct), rel=1e-9, abs=1e-12)


@pytest.mark.parametrize("alpha", [0.02, 0.1])
def test_with_no_error_every_stream_stops_where_the_certifier_s_fewest_count_says(alpha: float) -> None:
    mean, cut = mean_stop(PRIORS["uniform on [0, alpha] (the rule)"], alpha, 0.0, streams=3, seed=0)
    assert (mean, cut) == (fewest_items(alpha, segment_level(0.05, 0)), False)


def test_errors_near_alpha_take_longer_than_none() -> None:
    for wealth in PRIORS.values():
        none, _ = mean_stop(wealth, 0.1, 0.0, streams=20, seed=1)
        half, _ = mean_stop(wealth, 0.1, 0.5, streams=20, seed=1)
        assert half > 2 * none
