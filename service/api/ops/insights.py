"""What the operator dashboard plots beyond ``/metrics``: the precision-versus-coverage curve of the calibration
sample, realized precision from audits over time, and each tool's value against its cost."""

from __future__ import annotations

import threading
import weakref
from collections import OrderedDict

import numpy as np

from agent.aggregate import AggregatorModel, fit_aggregator, log_votes
from agent.calibration import counts_above, cp_interval, cp_upper
from agent.certificate import fewest_to_certify
from agent.ports import CALIBRATION_KINDS
from service.api.ops.metrics import LEVEL
from service.api.schemas.metrics import (
    CalibrationCurve,
    CalibrationPoint,
    CriticalLabelCalibration,
    PrecisionHistory,
    PrecisionPoint,
    ToolReport,
    ToolStats,
)
from service.store import SqlStore

MAX_POINTS = 100
TOOL_GROUND_TRUTH = 1000  # recent ground-truth items whose votes measure each tool
MIN_TOOL_VOTES = 30  # fewer votes of a tool on ground truth: no weight is fitted for it


def _cuts(n: int, max_points: int) -> list[int]:
    """Up to ``max_points`` prefix lengths in 1..n, always ending with n."""
    if n <= max_points:
        return list(range(1, n + 1))
    return sorted(set(np.linspace(1, n, max_points).round().astype(int).tolist()))


def calibration_curve(*, store: SqlStore, project: str, max_points: int = MAX_POINTS) -> CalibrationCurve:
    """Sort the calibration records by confidence, highest first; each point auto-labels a prefix of them."""
    policy = store.projects.active_policy(project)
    records = store.learning.load_calibration(project, policy.calibration_window, kinds=CALIBRATION_KINDS)
    conf = np.asarray([r.confidence for r in records], dtype=np.float64)
    correct = np.asarray([r.predicted == r.truth for r in records], dtype=bool)
    order = np.argsort(-conf, kind="stable")
    conf, correct = conf[order], correct[order]
    right = np.cumsum(correct)
    n = len(records)
    points: list[CalibrationPoint] = []
    for k in _cuts(n, max_points):
        while k < n and conf[k] == conf[k - 1]:  # a threshold takes every record of equal confidence
            k += 1
        if points and points[-1].n == k:
            continue
        errors = k - int(right[k - 1])
        points.append(
            CalibrationPoint(
                threshold=float(conf[k - 1]),
                coverage=k / n,
                precision=int(right[k - 1]) / k,
                precision_low=1.0 - float(cp_upper(errors, k, policy.delta)),
                n=k,
            )
        )
    threshold = store.learning.latest_threshold(project)
    truth = np.asarray([r.truth for r in records], dtype=object)[order]
    masks = tuple(truth == label for label in policy.critical_labels)
    counts = counts_above(np.inf if threshold is None else threshold, conf, correct, masks)  # None: nothing above
    critical = [CriticalLabelCalibration(label=label, records=int(mask.sum()), above_threshold=above,
                                         errors_above=errors, needed=fewest_to_certify(policy))
                for label, mask, (errors, above) in zip(policy.critical_labels, masks, counts, strict=True)]
    return CalibrationCurve(project=project, records=n, target_precision=policy.target_precision, delta=policy.delta,
                            threshold=threshold, points=points, critical=critical)


def precision_history(*, store: SqlStore, project: str, max_points: int = MAX_POINTS) -> PrecisionHistory:
    """Cumulative audits at up to ``max_points`` moments (evenly spaced in audit count), with their interval."""
    history = store.learning.audit_history(project)
    points = []
    right = np.cumsum([ok for _, ok in history]) if history else np.zeros(0)
    for k in _cuts(len(history), max_points):
        good = int(right[k - 1])
        lo, hi = cp_interval(good, k, LEVEL)
        points.append(
            PrecisionPoint(at=history[k - 1][0], audits=k, correct=good, estimate=good / k, ci_low=lo, ci_high=hi)
        )
    return PrecisionHistory(project=project, level=LEVEL, points=points)


_reports: weakref.WeakKeyDictionary[SqlStore, OrderedDict[tuple[object, ...], ToolReport]] = weakref.WeakKeyDictionary()
_reports_lock = threading.Lock()
CACHED_REPORTS = 64  # per store


def tool_report(*, store: SqlStore, project: str) -> ToolReport:
    """:func:`compute_tool_report`, computed again only when the project's decisions or labels changed (it refits
    the pool: about a second on 1,000 ground-truth items of a busy 2-core machine; the dashboard polls it)."""
    tasks, labels = store.reviews.count_tasks(project), store.learning.count_labels(project)
    key = (
        project,
        store.projects.get_project(project).active_version,
        tuple(sorted(tasks.items())),
        tuple(sorted(labels.items())),
    )
    with _reports_lock:
        cache = _reports.setdefault(store, OrderedDict())
        if key in cache:
            cache.move_to_end(key)
            return cache[key]
    report = compute_tool_report(store=store, project=project)
    with _reports_lock:
        cache[key] = report
        while len(cache) > CACHED_REPORTS:
            cache.popitem(last=False)
    return report


def compute_tool_report(*, store: SqlStore, project: str) -> ToolReport:
    """Calls and cost from every recorded vote; accuracy and pooled weight from the votes on recent ground truth."""
    usage = store.learning.tool_usage(project)
    labels = list(store.projects.active_policy(project).labels)
    position = {label: i for i, label in enumerate(labels)}
    truth = [
        (g.item.key, position[g.label])
        for g in store.learning.load_ground_truth(project, TOOL_GROUND_TRUTH)
        if g.label in position
    ]
    votes = store.learning.load_votes(project, [key for key, _ in truth])
    tools = [u.tool for u in usage]
    column = {tool: t for t, tool in enumerate(tools)}
    rows = [(key, y) for key, y in truth if votes.get(key)]
    logp = np.zeros((len(rows), len(tools), len(labels)))
    voted = np.zeros((len(rows), len(tools)), dtype=bool)
    for r, (key, _) in enumerate(rows):
        for vote in votes[key]:  # oldest first: a later decision's vote replaces an earlier one
            if vote.tool not in column or vote.distribution is None:
                continue
            dist = np.asarray([vote.distribution.get(label, 0.0) for label in labels])
            logp[r, column[vote.tool]] = log_votes(dist)
            voted[r, column[vote.tool]] = True
    y = np.asarray([label for _, label in rows], dtype=np.int64)
    weights: np.ndarray | None = None
    if len(rows) >= MIN_TOOL_VOTES and tools:
        counts = np.bincount(y, minlength=len(labels)).astype(np.float64)
        model = fit_aggregator(
            AggregatorModel.default(tuple(tools), len(labels)), logp, voted, y, counts, min_examples=MIN_TOOL_VOTES
        )
        weights = model.weights
    stats = []
    for t, u in enumerate(usage):
        cast = voted[:, t]
        accuracy = float(np.mean(logp[cast, t].argmax(axis=1) == y[cast])) if cast.any() else None
        weight = float(weights[t]) if weights is not None and cast.sum() >= MIN_TOOL_VOTES else None
        stats.append(
            ToolStats(tool=u.tool, votes=u.votes, abstains=u.abstains, cost=u.cost, accuracy=accuracy, weight=weight)
        )
    return ToolReport(project=project, ground_truth=len(rows), tools=stats)
