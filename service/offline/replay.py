"""``labelagent replay``: stream a labeled dataset through the service's code path and measure it.

Items arrive in a seeded random order, batch by batch. Each batch is ingested into the store,
claimed by the worker, labeled by one graph run and recorded. An oracle reviewer then answers the
review queue from the dataset's labels (cold start, escalations, audits): the agent never sees a
label it did not ask a human for. Answers reach the learner through the worker cycle the service runs
(:class:`~service.runtime.cycle.ProjectWorker`): a due retrain fits copies of the models while the snapshot in force
keeps deciding, answers are held back meanwhile, and the retrain is published between graph runs. The replay
publishes a retrain started after graph run ``k`` just before run ``k + retrain_lag`` (``ReplayConfig.retrain_lag``,
default 1: the service, whose next batch waits for a retrain that finishes within its wait; see
:mod:`service.runtime.cycle`): a count of runs, never the clock, so the replay stays deterministic per seed.
"""

from __future__ import annotations

import gc
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from agent.calibration import cp_interval
from agent.queue_order import QueueRule
from agent.runner import BatchLabeler
from policies import InputError, Policy
from service.offline import RETRAIN_LAG
from service.offline.datasets import LabeledItem
from service.offline.reviewers import Reviewers
from service.runtime.cycle import ProjectWorker
from service.store import SqlStore
from tools.base import Tool
from tools.image_embedding import ImageEmbedding
from tools.llm import LLMTool
from tools.text_embedding import TextEmbedding

DRAIN_LIMIT = 10  # the drain after the stream stops after this many times the stream's length


@dataclass(slots=True)
class ReplayConfig:
    batch_size: int = 256
    seed: int = 0
    limit: int | None = None
    order: str = "shuffle"  # "shuffle" (seeded) or "file": the file's order (a time series such as storms)
    retrain_lag: int = RETRAIN_LAG  # a retrain started after graph run k is published before run k + retrain_lag
    reviewer_rate: float | None = None  # i20: answers per arriving item (None: the oracle answers everything)
    plain_queue: bool = False  # i20: no cold-start sampling, ordering or re-decision (the queue as before)
    queue_parts: str | None = None  # i20: parts of "sample,order,redecide,release" (QueueRule.parse), for comparisons


def shuffled(rows: Sequence[LabeledItem], seed: int, limit: int | None, order: str = "shuffle") -> list[LabeledItem]:
    if order == "file":
        return list(rows[:limit] if limit else rows)
    if order != "shuffle":
        raise InputError(f"replay order {order!r} is unknown; use 'shuffle' or 'file'")
    permutation = np.random.default_rng(seed).permutation(len(rows))
    picked = [rows[i] for i in permutation]
    return picked[:limit] if limit else picked


async def run_replay(
    rows: Sequence[LabeledItem],
    policy: Policy,
    tools: Sequence[Tool],
    store: SqlStore,
    config: ReplayConfig,
    *,
    on_batch: Callable[[int], None] | None = None,
    decisions_out: dict[str, tuple[str, str | None]] | None = None,
) -> dict[str, Any]:
    """Replay ``rows`` through a fresh project in ``store``; returns the summary (see ``summarize``).

    BLAS runs on one thread meanwhile (as ``labelagent`` does for the whole process, see
    ``service.cli.limit_blas_threads``), so in-process callers such as the benchmarks measure the same thing.
    The objects that exist before the run (modules, the dataset) are frozen out of the garbage collector's
    full collections meanwhile: they are long-lived (a full collection scanning them cost ~0.2 s of a 5 s run).
    """
    gc.freeze()
    try:
        with threadpool_limits(limits=1, user_api="blas"):
            return await _replay(rows, policy, tools, store, config, on_batch,
                                 {} if decisions_out is None else decisions_out)
    finally:
        gc.unfreeze()


async def _replay(rows: Sequence[LabeledItem], policy: Policy, tools: Sequence[Tool], store: SqlStore,
                  config: ReplayConfig, on_batch: Callable[[int], None] | None,
                  decisions: dict[str, tuple[str, str | None]]) -> dict[str, Any]:
    if policy.overlap > 1:  # the oracle is one reviewer: an overlap it cannot meet would leave every task open
        raise InputError(f"the replay's oracle is a single reviewer, so policy overlap {policy.overlap} cannot be "
                         "met; replay with overlap: 1 (the replay does not simulate disagreeing reviewers)")
    if config.retrain_lag < 1:
        raise InputError(f"retrain lag {config.retrain_lag}: a retrain is published before graph run k + lag, "
                         "lag at least 1 (1: waited for before the next run)")
    stream = shuffled(rows, config.seed, config.limit, config.order)
    truth = {r.item.key: r.label for r in stream}
    store.projects.create_project(policy.project, policy)
    rule = QueueRule.plain() if config.plain_queue else None
    if config.queue_parts is not None:
        rule = QueueRule.parse(config.queue_parts)
    labeler = BatchLabeler(policy, tools, seed=config.seed, queue=rule)
    worker = ProjectWorker(store, policy.project, labeler, name="replay", batch_size=config.batch_size,
                           retrain_lag=config.retrain_lag)
    started = time.perf_counter()
    tally = await stream_through(worker, stream, truth, config.batch_size, on_batch, Reviewers(config.reviewer_rate))
    elapsed = time.perf_counter() - started
    decisions.update(tally.decisions)
    return {**summarize(policy, truth, tally.decisions, tally.human, tally.tool_calls, labeler, elapsed),
            **tally.track.summary(labeler), **cycle_summary(worker), **tally.queue}


def cycle_summary(worker: ProjectWorker) -> dict[str, Any]:
    """How the worker cycle ran: the stated retrain lag (graph runs), the graph runs, the retrains' thread seconds
    (measured, for comparing the lag with a service's fit time; never used to decide), and the cold-start samples
    released into the queue unanswered when a certificate came and the waiting items promoted to samples before one
    (finite reviewers only), and the graph runs in which each tool's call failed."""
    return {"retrain_lag": worker.retrain_lag, "graph_runs": worker.runs,
            "retrain_seconds": round(worker.retrain_seconds, 3), "samples_released": worker.waiting.released,
            "samples_promoted": worker.waiting.promoted, "tool_failures": dict(worker.tool_failures)}


@dataclass(slots=True)
class Tally:
    decisions: dict[str, tuple[str, str | None]] = field(default_factory=dict)  # key -> (action, agent label)
    human: dict[str, str] = field(default_factory=dict)  # key -> the oracle's answer
    tool_calls: Counter[str] = field(default_factory=Counter)
    track: CertificateTrack = field(default_factory=lambda: CertificateTrack())  # i14: the certificate's history
    queue: dict[str, Any] = field(default_factory=dict)  # i20: the reviewers' summary (service/offline/reviewers.py)


async def stream_through(worker: ProjectWorker, stream: Sequence[LabeledItem], truth: dict[str, str],
                         batch_size: int, on_batch: Callable[[int], None] | None = None,
                         reviewers: Reviewers | None = None) -> Tally:
    """Ingest ``stream`` batch by batch and run the worker cycle on it with an oracle reviewer (the replay's and
    the backtest's loop): publish a retrain when due, claim, graph run, record, the reviewers answer (everything
    this run escalated, or what their rate allows: ``service/offline/reviewers.py``), the learner learns (or the
    answers wait for the retrain in flight), a new certified snapshot re-decides the waiting items.
    ``worker.retrain_lag`` says when a retrain is published (a count of graph runs); at the end the last one is
    published. With a rate, the queue left when the stream ends is drained at the same rate (``Tally.queue``)."""
    tally = Tally()
    reviewers = reviewers or Reviewers()
    project = worker.project
    cycle = _Cycle(worker, tally, reviewers, truth)
    for start in range(0, len(stream), batch_size):
        chunk = stream[start:start + batch_size]
        worker.store.items.ingest(project, [r.item for r in chunk])
        handled = 0
        while handled < len(chunk):
            await cycle.pick_up()  # between graph runs, as the service's runtime does
            token, items = worker.claim()
            if not items:
                break
            outcome = await worker.run_claimed(token, items)
            assert outcome.result is not None
            # Items whose lease ran out during a slow run were fenced, not written: they are claimed again (a
            # chunk is done when every item was written, so none is left unlabeled at the end of the stream).
            handled += outcome.items - (len(outcome.record.fenced) if outcome.record is not None else 0)
            reviewers.tick(outcome.items)
            tally.track.batch(outcome.result, worker.labeler.learner)
            tally.tool_calls.update(outcome.result.tool_calls)
            tally.decisions.update((d.key, (d.action, d.label)) for d in outcome.result.decisions)
            reviewers.queued([d.key for d in outcome.result.decisions if d.action != "accept"])
            await cycle.review()
        if on_batch is not None:
            on_batch(len(chunk))
    await cycle.finish()
    tally.queue = await cycle.drain(len(stream), batch_size)
    return tally


@dataclass(slots=True)
class _Cycle:
    """The replay's side of the worker cycle after a graph run: reviewers answer, the learner learns, a new
    certified snapshot re-decides the queue's waiting items."""

    worker: ProjectWorker
    tally: Tally
    reviewers: Reviewers
    truth: dict[str, str]
    async def review(self) -> None:
        """The reviewers answer what they can now; the worker feeds the answers (held back while a retrain runs;
        with a lag, a retrain it starts is computed at once); a snapshot published by that re-decides the queue."""
        settled = self.reviewers.answer(self.worker.store, self.worker.project, self.truth)
        self.reviewers.depth(self.worker.store, self.worker.project)
        self.tally.human.update((gt.item.key, gt.label) for gt in settled)
        await self.worker.learn(settled)
        await self.redecide()

    async def pick_up(self, *, now: bool = False) -> None:
        """Publish the retrain in flight when due (``now``: at once); its snapshot re-decides the queue."""
        if await self.worker.pick_up(now=now) is not None:
            await self.redecide()

    async def finish(self) -> None:
        """End of the stream: publish the retrain in flight, feed the answers held back, until none is left."""
        while self.worker.training is not None or self.worker.backlog:
            await self.pick_up(now=True)
            await self.worker.learn([])
            await self.redecide()

    async def redecide(self) -> None:
        labels = await self.worker.redecide_waiting()
        if labels:
            self.tally.decisions.update((k, ("accept", lab)) for k, lab in labels.items())
            self.reviewers.took_over(labels, self.truth)

    async def drain(self, stream: int, batch_size: int) -> dict[str, Any]:
        """After the stream: the clock goes on without arrivals until the reviewers emptied the queue (at most
        ``DRAIN_LIMIT`` times the stream's length)."""
        reviewers, store, project = self.reviewers, self.worker.store, self.worker.project
        left_at_end = reviewers.depth(store, project)
        left, waited = left_at_end, 0
        while reviewers.rate is not None and left > 0 and waited < DRAIN_LIMIT * stream:
            reviewers.tick(batch_size)
            waited += batch_size
            await self.review()
            await self.finish()
            left = reviewers.depth(store, project)
        drained = waited if left == 0 else None
        return reviewers.summary(stream, left_at_end, drained, left)


@dataclass(slots=True)
class CertificateTrack:
    """i14: what the replay saw of the certificate, batch by batch (the summary's honesty fields)."""

    certified_once: bool = False
    without_after_first: int = 0
    items: int = 0
    detections: list[int] = field(default_factory=list)  # stream position (items decided) when drift was detected

    def batch(self, result: Any, learner: Any) -> None:
        decided = len(result.decisions)
        while len(self.detections) < learner.drift_detections:
            self.detections.append(self.items)
        if result.threshold is not None:
            self.certified_once = True
        elif self.certified_once:
            self.without_after_first += decided
        self.items += decided

    def summary(self, labeler: BatchLabeler) -> dict[str, Any]:
        learner = labeler.learner
        monitor = learner.monitor.state()
        return {
            "certificate_losses": learner.certifier.losses,
            "certificates_kept": learner.certifier.kept,  # failed tests that left the certificate in force
            "items_without_certificate_after_first": self.without_after_first,
            "snapshot_count": learner.snapshot.version,
            "certificate_tests": learner.certifier.tests,
            "drift_detections": learner.drift_detections,
            "drift_detected_at": self.detections,
            "monitor_alarms": monitor.alarms,
        }


def auto_errors_by_truth(auto: Sequence[tuple[str, str | None]], truth: dict[str, str],
                         top: int = 5) -> dict[str, dict[str, Any]]:
    """The true labels whose items were most often auto-labeled wrongly: per label, its auto labels, the wrong
    ones and that share (e.g. an out-of-scope class auto-labeled as an in-scope intent)."""
    counts: Counter[str] = Counter(truth[k] for k, _ in auto)
    wrong: Counter[str] = Counter(truth[k] for k, lab in auto if lab != truth[k])
    return {lab: {"auto": counts[lab], "wrong": n, "wrong_share": round(n / counts[lab], 4)}
            for lab, n in wrong.most_common(top)}


def critical_precision(auto: Sequence[tuple[str, str | None]], truth: dict[str, str],
                       critical: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Per critical label (``Policy.critical_labels``): its items auto-labeled, those labeled right, and that
    precision with its 95% Clopper-Pearson interval (what the certificate bounds for it)."""
    out: dict[str, dict[str, Any]] = {}
    for label in critical:
        mine = [lab for k, lab in auto if truth[k] == label]
        right = sum(1 for lab in mine if lab == label)
        lo, hi = cp_interval(right, len(mine))
        out[label] = {"auto": len(mine), "right": right, "precision": round(right / len(mine), 4) if mine else None,
                      "precision_ci": [round(lo, 4), round(hi, 4)]}
    return out


def tool_usage(tools: Sequence[Tool], n: int) -> dict[str, Any]:
    """What the expensive tools spent: texts/images each encoder encoded (decision time, training and rescoring
    together, each distinct input once) and its encoding seconds; each LLM tool's calls, tokens and price."""
    encoders: dict[str, Any] = {}
    llm: dict[str, Any] = {}
    for tool in tools:
        if isinstance(tool, TextEmbedding | ImageEmbedding):
            encoders[tool.name] = {"encoded": tool.cache.encoded, "encoded_share": round(tool.cache.encoded / n, 4)
                                   if n else 0.0, "cache_hits": tool.cache.hits}
            if isinstance(tool, TextEmbedding):
                encoders[tool.name]["encode_seconds"] = round(tool.encode_seconds, 3)
        elif isinstance(tool, LLMTool):
            llm[tool.name] = dict(tool.usage)
    out: dict[str, Any] = {}
    if encoders:
        out["encoders"] = encoders
    if llm:
        out["llm_usage"] = llm
    return out


def summarize(policy: Policy, truth: dict[str, str], decisions: dict[str, tuple[str, str | None]],
              human: dict[str, str], tool_calls: Counter[str], labeler: BatchLabeler,
              elapsed: float) -> dict[str, Any]:
    auto = [(k, lab) for k, (action, lab) in decisions.items() if action == "accept"]
    auto_ok = sum(1 for k, lab in auto if lab == truth[k])
    final_ok = auto_ok + sum(1 for k, lab in human.items() if lab == truth[k])
    agent_ok = sum(1 for k, (_, lab) in decisions.items() if lab == truth[k])
    lo, hi = cp_interval(auto_ok, len(auto))
    audits = sum(1 for action, _ in decisions.values() if action == "audit")
    n = len(truth)
    snap = labeler.learner.snapshot
    agg = snap.aggregator
    return {
        "items": n,
        "auto_labeled": len(auto),
        "human_reviews": len(human),
        "human_review_rate": round(len(human) / n, 4) if n else 0.0,
        "audits": audits,
        "auto_precision": round(auto_ok / len(auto), 4) if auto else None,
        "auto_precision_ci": [round(lo, 4), round(hi, 4)],
        "overall_accuracy": round(final_ok / n, 4) if n else None,
        # The agent's own label on every item (its suggestion where a human decided): how good the agent
        # is, independent of how much it delegated.
        "agent_accuracy": round(agent_ok / n, 4) if n else None,
        "target_precision": policy.target_precision,
        "unlabeled": n - len(auto) - len(human),
        "items_per_s": round(n / elapsed, 1) if elapsed > 0 else None,
        "seconds": round(elapsed, 3),
        "auto_errors_by_truth": auto_errors_by_truth(auto, truth),
        "critical_labels": critical_precision(auto, truth, policy.critical_labels),
        "tool_calls": dict(tool_calls),
        # Share of the items each tool was called on at decision time (the cascade's reach).
        "tool_reach": {t: round(c / n, 4) for t, c in tool_calls.items()} if n else {},
        **tool_usage(labeler.learner.tools, n),  # i14: the trained copies (they carry the encoding time)
        "tool_weights": {t: round(float(w), 3) for t, w in zip(agg.tools, agg.weights, strict=True)},
        "aggregator": {k: round(v, 4) for k, v in agg.metrics.items()},
        "threshold": None if snap.threshold is None else round(snap.threshold, 5),
        "labels": len(policy.labels),
        "retrains": labeler.learner.retrains,
        "model_versions": dict(snap.tool_versions),
        "policy": policy.key,
    }
