"""Numeric metadata as classifier features: standardised values, missing flags and, optionally, step indicators.

A linear model over a standardised value can only make a class more or less likely the larger the value
is; it cannot learn "hurricane from 64 knots on" sharply, nor a label that holds in a middle range.
With ``bins`` > 0, each key also gets step indicators ``x >= edge`` at up to ``bins - 1`` quantile edges
of its training values: a linear model over them learns any step function of the value (thresholds,
ranges), and the regularisation smooths neighbouring steps. Edges are data values, so for a discrete
key (wind in 5-knot steps) ``x >= 35`` separates 30 from 35 exactly. Missing values set only their flag.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from policies.model import TIME_PARTS
from tools.base import Batch, Item
from tools.open_meteo import parse_time


def metadata_values(batch: Batch, keys: tuple[str, ...]) -> np.ndarray:
    """(n, len(keys)) float64 matrix of numeric metadata; missing or non-numeric values are NaN.

    A key ``source:part`` (part in :data:`TIME_PARTS`) is that part of the time in metadata ``source``
    (ISO 8601 or EXIF, UTC): e.g. ``datetime:month``; NaN where it is missing or not a time.
    """
    getters = [_time_part(key) for key in keys]

    def build(items: list[Item]) -> np.ndarray:
        out = np.full((len(items), len(keys)), np.nan)
        for i, item in enumerate(items):
            meta = item.metadata
            for j, key in enumerate(keys):
                get = getters[j]
                out[i, j] = as_number(meta.get(key)) if get is None else get(meta)
        return out

    cached: np.ndarray = batch.cached(f"metadata_numeric:{'|'.join(keys)}", build)
    return cached


def _time_part(key: str) -> Callable[[dict[str, Any]], float] | None:
    source, sep, part = key.rpartition(":")
    if not sep or part not in TIME_PARTS or not source:
        return None

    def get(meta: dict[str, Any]) -> float:
        if key in meta:  # a real key that happens to contain the separator
            return as_number(meta[key])
        moment = parse_time(meta.get(source))
        if moment is None:
            return math.nan
        if part == "dayofyear":
            return float(moment.timetuple().tm_yday)
        if part == "weekday":
            return float(moment.weekday())
        if part == "hour":
            return moment.hour + moment.minute / 60.0
        return float(getattr(moment, part))

    return get


def as_number(value: object) -> float:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, int | float):
        number = float(value)
    elif isinstance(value, str):
        try:
            number = float(value)
        except ValueError:
            return math.nan
    else:
        return math.nan
    return number if math.isfinite(number) else math.nan


@dataclass(slots=True, frozen=True)
class MetadataEncoding:
    """What a fit learned about the metadata keys: moments for the standardised values, step edges per key."""

    mean: np.ndarray
    std: np.ndarray
    edges: tuple[np.ndarray, ...]  # per key, increasing; empty without bins

    @property
    def width(self) -> int:
        """Columns of :meth:`encode`: value and missing flag per key, then the step indicators."""
        return 2 * len(self.mean) + sum(len(e) for e in self.edges)

    @classmethod
    def fit(cls, raw: np.ndarray, bins: int = 0) -> MetadataEncoding:
        present = ~np.isnan(raw)
        count = np.maximum(present.sum(axis=0), 1)
        filled = np.where(present, raw, 0.0)
        mean = filled.sum(axis=0) / count
        var = (np.where(present, raw - mean, 0.0) ** 2).sum(axis=0) / count
        std = np.sqrt(var)
        std[std == 0] = 1.0
        edges = tuple(step_edges(raw[present[:, j], j], bins) for j in range(raw.shape[1]))
        return cls(mean, std, edges)

    def encode(self, raw: np.ndarray) -> np.ndarray:
        """float32 (n, width): standardised values (missing -> 0), missing flags, then ``x >= edge`` per edge."""
        missing = np.isnan(raw)
        z = np.where(missing, 0.0, (raw - self.mean) / self.std)
        parts = [z, missing.astype(np.float64)]
        for j, edges in enumerate(self.edges):
            if len(edges):
                parts.append(raw[:, j, None] >= edges[None, :])  # NaN compares False: a missing value sets no step
        return np.hstack(parts).astype(np.float32)

    def rows_in(self, other: MetadataEncoding) -> np.ndarray:
        """For each column of this encoding, the same column of ``other`` (an encoding of the same keys: the
        same key's value, flag or edge), or -1 where ``other`` has no such edge."""
        out = [np.arange(2 * len(self.mean))]
        offset = 2 * len(other.mean)
        for edges, old in zip(self.edges, other.edges, strict=True):
            pos = np.minimum(np.searchsorted(old, edges), max(len(old) - 1, 0))
            hit = old[pos] == edges if len(old) else np.zeros(len(edges), dtype=bool)
            out.append(np.where(hit, offset + pos, -1))
            offset += len(old)
        return np.concatenate(out).astype(np.int64)


def step_edges(values: np.ndarray, bins: int) -> np.ndarray:
    """Up to ``bins - 1`` distinct quantile edges of ``values`` (data values above the minimum); none if ``bins``
    is below 2 or the values are constant."""
    if bins < 2 or len(values) == 0:
        return np.zeros(0)
    levels = np.arange(1, bins) / bins
    edges = np.unique(np.quantile(values, levels, method="higher"))
    above: np.ndarray = edges[edges > values.min()]
    return above
