"""Reproducible streams for the guarantee's scenarios (issue 14): a stationary start, then a shift.

``withheld_then_appearing``: some labels (chosen by the seed) never occur before item ``shift``; from there
the remaining items, those labels included, arrive in a seeded random order. Replayed with ``order="file"``.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from service.offline.datasets import LabeledItem


def withheld_then_appearing(rows: Sequence[LabeledItem], *, withheld: int, shift: int,
                            seed: int) -> tuple[list[LabeledItem], set[str]]:
    """The stream and the withheld labels. The first ``shift`` items come from the other labels only."""
    rng = np.random.default_rng(seed)
    labels = sorted({r.label for r in rows})
    if not 0 < withheld < len(labels):
        raise ValueError(f"withheld must be between 1 and {len(labels) - 1} (got {withheld})")
    hidden = {labels[i] for i in rng.choice(len(labels), size=withheld, replace=False)}
    order = rng.permutation(len(rows))
    before = [rows[i] for i in order if rows[i].label not in hidden]
    if len(before) < shift:
        raise ValueError(f"only {len(before)} items outside the withheld labels; shift must be at most that")
    rest = before[shift:] + [rows[i] for i in order if rows[i].label in hidden]
    tail = [rest[i] for i in rng.permutation(len(rest))]
    return before[:shift] + tail, hidden
