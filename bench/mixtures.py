"""``python -m bench mixtures``: how many calibration items the betting certificate needs, per mixing prior.

``certification: betting`` tests each candidate threshold with a likelihood ratio of an error rate ``p`` against
``alpha``, mixed over ``p`` by a prior fixed before the data (``agent.betting.log_wealth``: uniform on
``[0, alpha]``). Any such prior keeps the guarantee, so the choice is about power only. For Bernoulli error streams
at a fraction of ``alpha`` this reports the mean number of items until the wealth reaches ``1 / (0.9 delta)`` (the
first segment's level at ``delta = 0.05``): the cold start at the grid's top when the fraction is small, a late
candidate near the frontier when it is close to 1. ``+`` marks a cell where some stream never got there within
``HORIZON / alpha`` items (its mean is then a lower bound). Written to the ``mixtures`` section of
``docs/BENCHMARKS.md``; DESIGN-NOTES section 14 ("A geometric grid of error rates") reads it.
"""

from __future__ import annotations

import argparse
import math
from collections.abc import Callable, Sequence

import numpy as np
from scipy.special import logsumexp

from agent.betting import log_wealth, segment_level
from bench import machine_info, write_section

Wealth = Callable[[np.ndarray, np.ndarray, float], np.ndarray]
FRACTIONS = (0.0, 0.1, 0.25, 0.5, 0.7)  # true error rates, as fractions of alpha
ALPHAS = (0.02, 0.05, 0.10)
HORIZON = 400  # items per stream, divided by alpha
DELTA = 0.05


def grid(shares: Sequence[float]) -> Wealth:
    """The likelihood ratio averaged with equal weights over ``p = s alpha`` for each share ``s``."""
    s = np.asarray(shares, dtype=np.float64)

    def wealth(n: np.ndarray, e: np.ndarray, alpha: float) -> np.ndarray:
        terms = e[..., None] * np.log(s) + (n - e)[..., None] * (np.log1p(-s * alpha) - math.log1p(-alpha))
        return np.asarray(logsumexp(terms, axis=-1) - math.log(len(s)), dtype=np.float64)

    return wealth


PRIORS: dict[str, Wealth] = {
    "uniform on [0, alpha] (the rule)": log_wealth,
    "alpha/2, /4, /8, /16": grid([0.5, 0.25, 0.125, 0.0625]),
    "alpha/2 ... /32": grid([0.5, 0.25, 0.125, 0.0625, 0.03125]),
    "3 alpha/4, alpha/2 ... /16": grid([0.75, 0.5, 0.25, 0.125, 0.0625]),
}


def mean_stop(wealth: Wealth, alpha: float, fraction: float, streams: int, seed: int) -> tuple[float, bool]:
    """Mean items until ``wealth`` reaches the first segment's level on ``streams`` Bernoulli streams; and whether
    some stream never did within the horizon."""
    goal = math.log(1.0 / segment_level(DELTA, 0))
    horizon = int(HORIZON / alpha)
    n = np.arange(1, horizon + 1, dtype=np.float64)
    errors = np.cumsum(np.random.default_rng(seed).random((streams, horizon)) < fraction * alpha, axis=1)
    stops, cut = [], False
    for e in errors.astype(np.float64):
        hit = np.flatnonzero(wealth(n, e, alpha) >= goal)
        stops.append(int(hit[0]) + 1 if hit.size else horizon)
        cut = cut or not hit.size
    return float(np.mean(stops)), cut


def table(streams: int, seed: int) -> list[str]:
    head = "| prior on the error rate | alpha | " + " | ".join(f"error {f:g} alpha" for f in FRACTIONS) + " |"
    lines = [head, "| --- | --- |" + " --- |" * len(FRACTIONS)]
    for alpha in ALPHAS:
        for name, wealth in PRIORS.items():  # the same streams for every prior (one seed per cell)
            cells = []
            for fraction in FRACTIONS:
                mean, cut = mean_stop(wealth, alpha, fraction, streams, seed)
                cells.append(f"{mean:,.0f}{'+' if cut else ''}")
            lines.append(f"| {name} | {alpha:g} | " + " | ".join(cells) + " |")
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench mixtures", description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", type=int, default=300, help="Bernoulli streams per cell")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args(argv)
    lines = table(args.streams, args.seed)
    print("\n".join(lines))
    write_section("mixtures", "\n".join([
        "## Betting mixtures: items to certify", "",
        f"Run {machine_info()}; `python -m bench mixtures --streams {args.streams} --seed {args.seed}`: mean items "
        f"until the wealth reaches `1 / (0.9 delta)` at `delta = {DELTA}`, on the same Bernoulli error streams for "
        f"every prior (`+`: some stream did not get there within {HORIZON} / alpha items).", "", *lines]))
    return 0
