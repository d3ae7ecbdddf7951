"""The one small interface every tool implements: async, batched, vectorised.

A tool receives a :class:`Batch` of items and returns :class:`Votes`: for each item a probability
distribution over the project's labels (or an abstain), the cost it spent, and human-readable
evidence. Tools that learn from ground truth also implement :class:`Learnable`; their ``fit``
builds a new model off the hot path and swaps it in atomically, so a running ``predict`` never
sees a half-trained model.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

import numpy as np
import scipy.sparse as sp


@dataclass(slots=True)
class Item:
    """One item to label. ``key`` is stable (the client's external id)."""

    key: str
    text: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    image: bytes | None = None


def _take(value: Any, idx: np.ndarray) -> Any:
    if isinstance(value, sp.csr_matrix):
        return _take_rows(value, idx)
    if isinstance(value, np.ndarray) or sp.issparse(value):
        return value[idx]
    if isinstance(value, list):
        return [value[i] for i in idx]
    raise TypeError(f"cannot slice cached feature of type {type(value).__name__}")


def _take_rows(x: sp.csr_matrix, idx: np.ndarray) -> sp.csr_matrix:
    """``x[idx]`` for a CSR matrix, without scipy's fancy-indexing overhead (~20x faster for a few rows)."""
    n = x.shape[0]
    if idx.size and (idx.min() < -n or idx.max() >= n):
        raise IndexError(f"row index out of range for a matrix of {n} rows")
    idx = np.where(idx < 0, idx + n, idx)
    starts = x.indptr[idx]
    counts = x.indptr[idx + 1] - starts
    indptr = np.zeros(len(idx) + 1, dtype=x.indptr.dtype)
    np.cumsum(counts, out=indptr[1:])
    positions = np.repeat(starts - indptr[:-1], counts) + np.arange(indptr[-1], dtype=x.indptr.dtype)
    out = sp.csr_matrix((x.data[positions], x.indices[positions], indptr), shape=(len(idx), x.shape[1]), copy=False)
    out.has_sorted_indices = x.has_sorted_indices
    return out


def _concat(values: Sequence[Any]) -> Any:
    first = values[0]
    if sp.issparse(first):
        return sp.vstack(values, format="csr")
    if isinstance(first, np.ndarray):
        return np.concatenate(values, axis=0)
    if isinstance(first, list):
        return [v for value in values for v in value]
    raise TypeError(f"cannot concatenate cached feature of type {type(first).__name__}")


class Batch:
    """Items plus a cache of row-aligned features shared by the tools of one graph run.

    ``cached(key, fn)`` computes a feature matrix once per batch (``fn(items)`` must return one row
    per item: a numpy array, a scipy sparse matrix or a list); ``subset`` and ``concat`` keep the
    cache aligned, so the learner reuses the features computed at decision time. A concatenation
    remembers its parts: a feature missing in some parts is computed for those parts only.
    """

    __slots__ = ("_cache", "_parts", "items")

    def __init__(self, items: Sequence[Item], cache: dict[str, Any] | None = None,
                 parts: Sequence[Batch] | None = None) -> None:
        self.items: list[Item] = list(items)
        self._cache: dict[str, Any] = cache if cache is not None else {}
        self._parts: list[Batch] | None = list(parts) if parts else None

    def __len__(self) -> int:
        return len(self.items)

    @property
    def texts(self) -> list[str]:
        return [item.text or "" for item in self.items]

    @property
    def keys(self) -> list[str]:
        return [item.key for item in self.items]

    def cached(self, key: str, fn: Callable[[list[Item]], Any]) -> Any:
        value = self._cache.get(key)
        if value is None:
            value = _concat([part.cached(key, fn) for part in self._parts]) if self._parts else fn(self.items)
            self._cache[key] = value
        return value

    def derived(self, key: str, fn: Callable[[Batch], Any]) -> Any:
        """Like ``cached``, for a feature built from other cached features: ``fn(batch)`` receives the batch (a
        part of a concatenation, each in turn), so it can read their caches. It must still be row-wise: each
        row's value may depend on that item only."""
        value = self._cache.get(key)
        if value is None:
            value = _concat([part.derived(key, fn) for part in self._parts]) if self._parts else fn(self)
            self._cache[key] = value
        return value

    def subset(self, idx: Sequence[int] | np.ndarray) -> Batch:
        idx = np.asarray(idx, dtype=np.int64)
        items = [self.items[i] for i in idx.tolist()]
        return Batch(items, {k: _take(v, idx) for k, v in self._cache.items()})

    @staticmethod
    def concat(batches: Sequence[Batch]) -> Batch:
        batches = [b for b in batches if len(b)]
        if not batches:
            return Batch([])
        if len(batches) == 1:
            return batches[0]
        # Flatten one level so long-lived concatenations do not nest without bound.
        flat: list[Batch] = []
        for b in batches:
            if b._cache or b._parts is None:
                flat.append(Batch(b.items, b._cache))  # a leaf: its own parts are no longer needed
            else:
                flat.extend(b._parts)
        shared = set.intersection(*(set(b._cache) for b in flat))
        cache = {k: _concat([b._cache[k] for b in flat]) for k in shared}
        return Batch([it for b in flat for it in b.items], cache, flat)


@dataclass(slots=True)
class Vote:
    """One tool's vote on one item."""

    tool: str
    distribution: dict[str, float] | None  # None = abstain
    cost: float
    evidence: str

    @property
    def abstained(self) -> bool:
        return self.distribution is None


@dataclass(slots=True)
class Votes:
    """A tool's votes on a batch, row-aligned with the batch.

    ``probs`` has shape (n, n_labels) with rows summing to 1; rows where ``abstain`` is true carry
    no information (they are uniform). ``evidence`` is one short human-readable string per item.
    """

    tool: str
    probs: np.ndarray
    abstain: np.ndarray
    cost: np.ndarray
    evidence: list[str]
    model_version: str | None = None
    review: np.ndarray | None = None  # per item: True = a human must review it, whatever the votes say
    failed: bool = False  # the call raised: every row abstains for want of an answer, not by the tool's judgement

    def __post_init__(self) -> None:
        n = self.probs.shape[0]
        if self.abstain.shape != (n,) or self.cost.shape != (n,) or len(self.evidence) != n:
            raise ValueError(f"votes of {self.tool}: arrays are not aligned with {n} items")
        if self.review is not None and self.review.shape != (n,):
            raise ValueError(f"votes of {self.tool}: review flags are not aligned with {n} items")

    def __len__(self) -> int:
        return int(self.probs.shape[0])

    @classmethod
    def abstaining(cls, tool: str, n: int, n_labels: int, reason: str, cost: float = 0.0,
                   model_version: str | None = None, *, failed: bool = False) -> Votes:
        return cls(
            tool=tool,
            probs=np.full((n, n_labels), 1.0 / n_labels, dtype=np.float64),
            abstain=np.ones(n, dtype=bool),
            cost=np.full(n, cost, dtype=np.float64),
            evidence=[reason] * n,
            model_version=model_version,
            failed=failed,
        )

    def as_list(self, labels: Sequence[str]) -> list[Vote]:
        out = []
        for i in range(len(self)):
            dist = None if self.abstain[i] else {lab: float(p) for lab, p in zip(labels, self.probs[i], strict=True)}
            out.append(Vote(self.tool, dist, float(self.cost[i]), self.evidence[i]))
        return out


@dataclass(slots=True)
class ToolContext:
    """Per-run context a tool may use; never global state."""

    labels: tuple[str, ...]
    rng: np.random.Generator = field(default_factory=lambda: np.random.default_rng(0))


@dataclass(slots=True, frozen=True)
class ModelInfo:
    """What a fit produced: a version string and how it was trained."""

    tool: str
    version: str
    trained_on: int
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass(slots=True)
class TrainingSet:
    """Ground truth for learning tools: a batch (with cached features) and label indices."""

    batch: Batch
    y: np.ndarray  # int label indices into ``labels``
    labels: tuple[str, ...]

    def __len__(self) -> int:
        return len(self.batch)


# --- the contract ---------------------------------------------------------------------------------------
# ``Tool`` is what every tool implements. The optional capabilities below are the only other hooks the agent and
# the registry use; each is a runtime-checkable protocol, tested with ``isinstance`` (never probed by name).


@runtime_checkable
class Tool(Protocol):
    """A voter. ``predict`` is vectorised over the batch and must not block the event loop long."""

    name: str
    kind: str
    cost: float

    async def predict(self, batch: Batch, context: ToolContext) -> Votes: ...


@runtime_checkable
class Learnable(Tool, Protocol):
    """A tool that learns from ground truth. ``fit`` may run in a worker thread."""

    @property
    def version(self) -> str: ...

    def fit(self, data: TrainingSet) -> ModelInfo: ...


@runtime_checkable
class Forkable(Learnable, Protocol):
    """A learning tool that makes an untrained copy of itself with the same settings (cross-fitting folds).
    A learning tool without ``fork`` is copied with ``copy.deepcopy``."""

    def fork(self) -> Learnable: ...


@runtime_checkable
class Preparing(Tool, Protocol):
    """A tool that computes and caches its features for a whole batch at once (``agent.graph`` calls ``prepare``
    once per batch, after enrichment, so every subset, review trace and training set reuses them)."""

    def prepare(self, batch: Batch) -> None: ...


@runtime_checkable
class Bounded(Tool, Protocol):
    """A tool whose votes are never surer than ``vote_ceiling`` (the probability its top label gets, the rest spread
    evenly), e.g. an LLM voting its fixed ``strength``: the planner takes that, not ``planner.best_case_vote``, as
    the worst one of its votes can do to an item (``agent.cascade.could_fall``)."""

    @property
    def vote_ceiling(self) -> float: ...


@runtime_checkable
class Enriching(Tool, Protocol):
    """A tool that writes features other tools read (e.g. weather into metadata): the planner calls it first, on
    every open item, and never skips it for lack of a learned weight. ``enriches`` is True."""

    enriches: Literal[True]


def is_enrichment(tool: Tool) -> bool:
    return isinstance(tool, Enriching) and tool.enriches


@runtime_checkable
class ExampleSource(Protocol):
    """What a retrieval tool offers an example reader: its labeled examples and the nearest ones to a batch."""

    labels: tuple[str, ...]

    @property
    def index(self) -> Any: ...

    def neighbours(self, batch: Batch, index: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]: ...


@runtime_checkable
class ReadsExamples(Tool, Protocol):
    """A tool that reads few-shot examples from another tool (an llm's ``examples_from``); the registry wires it."""

    retrieval: ExampleSource | None
