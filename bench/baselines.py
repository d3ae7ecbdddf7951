"""Baseline labeling strategies for the quality benchmark: a bare loop over batches of the shuffled stream.

No storage and no graph: the classifier's async ``predict`` and ``fit`` are called directly and an
oracle answers every review from the dataset's labels. Retraining follows the learner's schedule
(``agent.learner``: dense early, then every ``policy.retrain_every`` answers). The policy's enabled
enrichment tools (``enriches``, e.g. weather into ``wx_*`` metadata) run first on each batch, as in
the graph, so the classifier reads the same features as labelagent's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from agent.calibration import choose_threshold, cp_interval
from agent.schedule import retrain_step
from policies import Policy
from policies.exceptions import ToolError
from service.offline.datasets import LabeledItem
from service.offline.testing.open_meteo import allowing
from tools.base import Batch, Item, Tool, ToolContext, TrainingSet
from tools.registry import KINDS, build_tools

PRE_ANNOTATION_THRESHOLD = 0.9
AUDIT_RATE = 0.05


@dataclass(slots=True)
class Outcome:
    """What one strategy did on one stream."""

    items: int = 0
    reviews: int = 0
    auto: int = 0
    auto_ok: int = 0
    fits: int = 0
    enrich_failures: int = 0  # batches where an enrichment tool raised (its features missing there)
    extra: dict[str, float] = field(default_factory=dict)

    def tally(self, auto: np.ndarray, right: np.ndarray) -> None:
        """Count one batch: ``auto`` items auto-labeled (``right`` where correct), the others reviewed."""
        self.auto += int(auto.sum())
        self.auto_ok += int((auto & right).sum())
        self.reviews += int((~auto).sum())

    def summary(self, target: float) -> dict[str, object]:
        lo, hi = cp_interval(self.auto_ok, self.auto)
        precision = self.auto_ok / self.auto if self.auto else None
        return {
            "items": self.items,
            "human_reviews": self.reviews,
            "human_review_rate": self.reviews / self.items if self.items else 0.0,
            "auto_labeled": self.auto,
            "auto_correct": self.auto_ok,
            "auto_precision": precision,
            "auto_precision_ci": [lo, hi],
            # Human (oracle) labels are correct; auto labels are right or wrong.
            "overall_accuracy": (self.reviews + self.auto_ok) / self.items if self.items else None,
            "target_precision": target,
            "target_held": None if precision is None else precision >= target,
            "fits": self.fits,
            "enrich_failures": self.enrich_failures,
            **self.extra,
        }


def single_tool_policy(policy: Policy, kind: str) -> Policy:
    """The policy with only its first enabled tool of ``kind`` (the one the baselines use)."""
    spec = next(t for t in policy.tools if t.kind == kind and t.enabled)
    return policy.model_copy(update={"tools": [spec]})


def enrichment_policy(policy: Policy) -> Policy:
    """The policy with only its enabled enrichment tools (those whose kind ``enriches``), in policy order."""
    specs = [t for t in policy.tools if t.enabled and getattr(KINDS.get(t.kind), "enriches", False)]
    return policy.model_copy(update={"tools": specs})


async def enrich(tools: Sequence[Tool], batch: Batch, context: ToolContext) -> int:
    """Run each enrichment tool on the batch (they write item metadata); returns how many failed.

    A failing tool leaves the items without its features, as the graph degrades them (``act``).
    """
    failed = 0
    for tool in tools:
        try:
            await tool.predict(batch, context)
        except ToolError:
            failed += 1
    return failed


def copy_item(item: Item) -> Item:
    """A copy whose metadata enrichment may write without touching the dataset's item (shared by strategies)."""
    return Item(item.key, item.text, dict(item.metadata), item.image)


def manual(stream: Sequence[LabeledItem], policy: Policy) -> dict[str, object]:
    """Humans label everything."""
    n = len(stream)
    return Outcome(items=n, reviews=n).summary(policy.target_precision)


def retrain_due(since: int, n_truth: int, retrain_every: int) -> bool:
    return since >= retrain_step(n_truth, retrain_every)


def _recalibrate(policy: Policy, cal_conf: list[float], cal_ok: list[bool], sampled: np.ndarray,
                 conf: np.ndarray, right: np.ndarray) -> float | None:
    """Add the audited items (``sampled``) to the calibration set; the threshold it certifies now (None: none)."""
    cal_conf.extend(conf[sampled].tolist())
    cal_ok.extend(right[sampled].tolist())
    window = policy.calibration_window
    alpha, delta = 1.0 - policy.target_precision, 1.0 - policy.confidence
    return choose_threshold(cal_conf[-window:], cal_ok[-window:], alpha=alpha, delta=delta).threshold


async def classifier_loop(stream: Sequence[LabeledItem], policy: Policy, kind: str, *, strategy: str,
                          seed: int, batch_size: int = 256,
                          enrichers: Sequence[Tool] | None = None) -> dict[str, object]:
    """``pre_annotation`` (fixed 0.9 threshold) or ``audit_calibrated`` (5% audits, Clopper-Pearson threshold).

    ``enrichers`` default to fresh instances of the policy's enrichment tools.
    """
    (tool,) = build_tools(single_tool_policy(policy, kind), env=allowing(policy))
    if enrichers is None:
        enrichers = build_tools(enrichment_policy(policy), env=allowing(policy))
    labels = tuple(policy.labels)
    index = {lab: i for i, lab in enumerate(labels)}
    context = ToolContext(labels, np.random.default_rng(seed))
    rng = np.random.default_rng(seed + 1000)
    out = Outcome(items=len(stream))
    truth_batches: list[Batch] = []
    truth_y: list[int] = []
    since = 0
    cal_conf: list[float] = []
    cal_ok: list[bool] = []
    threshold: float | None = PRE_ANNOTATION_THRESHOLD if strategy == "pre_annotation" else None
    certified_at: int | None = None
    for start in range(0, len(stream), batch_size):
        chunk = stream[start:start + batch_size]
        batch = Batch([copy_item(r.item) for r in chunk] if enrichers else [r.item for r in chunk])
        out.enrich_failures += await enrich(enrichers, batch, context)
        prepare = getattr(tool, "prepare", None)
        if prepare is not None:
            prepare(batch)
        votes = await tool.predict(batch, context)
        conf = votes.probs.max(axis=1)
        pred = votes.probs.argmax(axis=1)
        gold = np.array([index[r.label] for r in chunk])
        right = (pred == gold) & ~votes.abstain
        audit = np.zeros(len(chunk), dtype=bool)
        if strategy == "audit_calibrated":
            audit = rng.random(len(chunk)) < AUDIT_RATE
        auto = ~votes.abstain & ~audit & (conf >= threshold) if threshold is not None else np.zeros(len(chunk), bool)
        reviewed = ~auto
        out.tally(auto, right)
        rows = np.flatnonzero(reviewed)
        if rows.size:
            truth_batches.append(batch.subset(rows))
            truth_y.extend(gold[rows].tolist())
            since += int(rows.size)
        if strategy == "audit_calibrated":
            threshold = _recalibrate(policy, cal_conf, cal_ok, np.flatnonzero(audit & ~votes.abstain), conf, right)
            if threshold is not None and certified_at is None:
                certified_at = start + len(chunk)
        if retrain_due(since, len(truth_y), policy.retrain_every):
            truth = Batch.concat(truth_batches)
            truth_batches = [truth]
            tool.fit(TrainingSet(truth, np.asarray(truth_y, dtype=np.int64), labels))
            out.fits += 1
            since = 0
    if strategy == "audit_calibrated":
        out.extra["certified_after_items"] = float(certified_at) if certified_at is not None else float("nan")
        out.extra["final_threshold"] = float(threshold) if threshold is not None else float("nan")
    return out.summary(policy.target_precision)
