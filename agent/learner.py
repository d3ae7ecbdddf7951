"""Learning from human answers: retrain tools, re-weight the pool, re-calibrate, watch for drift.

Every human answer is ground truth. The learner keeps the decision-time evidence of the items it
sent to review (:class:`ReviewTrace`) and, when their answers arrive, turns them into training data
for the aggregator and into calibration records. It retrains the learning tools on a schedule that
is dense early (the first labels matter most) and every ``policy.retrain_every`` answers later, and
publishes each result (with the tools deciding with it) as a new immutable :class:`AgentSnapshot`: a graph run
keeps the snapshot it started with; ``prepare_retrain`` fits copies, ``publish`` puts them in force.
"""

from __future__ import annotations

import threading
import zlib
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

from agent.aggregate import AggregatorModel, fit_aggregator, maturity_weights
from agent.calibration import ThresholdResult, detect_drift
from agent.cascade import cascade_proba, cheap_mask, vote_bound
from agent.certificate import make_certifier, new_certificate, raised_audit_rate
from agent.drift import EscalationMonitor, eligible_below
from agent.folds import PARALLEL_FROM, FoldJob, add_piece, fit_together, fold_jobs, rescored_votes, stage
from agent.ports import CALIBRATION_KINDS, BatchResult, CalibrationRecord, GroundTruth
from agent.schedule import TrainingWindow, retrain_step
from agent.state import AgentSnapshot, PendingReview, PendingReviews, Retrained, ReviewTrace
from policies import Policy
from tools.base import Batch, Learnable, ModelInfo, Tool, TrainingSet, Votes

DRIFT_AUDITS = 200  # audits of would-be auto labels examined by the drift check
MIN_DRIFT_AUDITS = 30  # fewer audits than this never signal drift (checked after every batch)
RESCORE_FOLDS = 4
RESCORE_GROWTH = 1.1  # rescore the calibration set when the ground truth grew by this factor
RESCORE_MIN = 40  # ... counted from this many
AUDIT_PER_ESCALATION = 0.5  # while the calibration set is small: audits per item left to humans
FINE_CALIBRATION = 8  # ... i.e. under this many times the fewest items that can certify (alpha 0.02: 1,192)
AGGREGATOR_WINDOW = 1000  # the pool is refitted on the most recent reviewed items: tools improve


class Learner:
    """Owns the ground truth, the aggregator's training data and the calibration set.

    The calibration set is the part of the ground truth that samples the stream uniformly: cold-start samples
    (chosen by counts only, agent/queue_order.py) and audits (a uniform random sample of the stream, the suggestion
    hidden from the reviewer). Escalations train the models but are not calibration data: they are selected by
    confidence. Corrections (an item's label fixed after the fact, ``GroundTruth.correction``) are training data
    only: they replace the item's training label, or add the item, and never touch the calibration set (which items
    get corrected is not a uniform sample; a calibration item keeps the truth its review gave) nor the drift check.

    Scores are refreshed out of fold when the ground truth grew by ``RESCORE_GROWTH`` (K fold models per learning
    tool). A certifier keeps the certificate; an :class:`EscalationMonitor` watches for drift without labels.
    """

    def __init__(self, policy: Policy, tools: Sequence[Tool], window: TrainingWindow | None = None) -> None:
        self.policy = policy
        self.window = window or TrainingWindow()  # i18: bounded training set (agent/schedule.py)
        self._tools = tuple(tools)
        self.labels = tuple(policy.labels)
        self._label_index = {lab: i for i, lab in enumerate(self.labels)}
        self.pending = PendingReviews()  # items sent to humans, by key, until their answers arrive
        self._gt_batches: list[Batch] = []
        self._gt_batch: Batch = Batch([])
        self._gt_y: list[int] = []
        self._gt_logp: list[np.ndarray | None] = []  # decision-time votes, where known
        self._gt_voted: list[np.ndarray | None] = []
        self._gt_row: dict[str, int] = {}  # item key -> its (latest) training row
        # the pool's rows: (ground-truth row, rows its deciding models were fitted on; None: unknown)
        self._agg_rows: deque[tuple[int, int | None]] = deque(maxlen=AGGREGATOR_WINDOW)
        # calibration set: ground-truth rows that are i.i.d. samples of the stream, and their scores
        self._iid_rows: list[int] = []
        self._iid_conf: list[float] = []
        self._iid_pred: list[int] = []
        self._iid_y: list[int] = []  # the truth each calibration item joined with (a correction never changes it)
        self._iid_fold: list[int] = []  # i18: each calibration item's rescoring fold, hashed once when it joins
        self._calibration_since = 0  # first i.i.d. position in use (moves forward on drift)
        self._audits: list[tuple[int, bool]] = []  # (i.i.d. position, correct) of audits of would-be auto labels
        self._seq = 0
        self._since_retrain = 0
        self._rescored_at = 0
        self._fold_tools: dict[tuple[int, int], Learnable] = {}  # (fold, tool index) -> model without that fold
        self._gt_keys: list[str] = []
        self.retrains = 0
        self.rescores = 0
        self.model_infos: list[ModelInfo] = []
        # i14: the certificate valid for the whole run (agent/certificate.py) and the label-free drift monitor
        self.certifier = make_certifier(policy)  # policy.certification: betting (default), anytime or per_batch
        self.monitor = EscalationMonitor()
        self.drift_detections = 0
        self._segment = threading.Lock()  # certifier, monitor, window, calibration start: a retrain's or an alarm's
        self._always = frozenset(policy.always_review)
        names = tuple(t.name for t in self._tools)
        self.snapshot = AgentSnapshot(
            aggregator=AggregatorModel.default(names, len(self.labels)),
            calibration=ThresholdResult(None, 0, 0, 0, 1.0),
            audit_rate=1.0,
            tools=self._tools,
        )

    @property
    def tools(self) -> tuple[Tool, ...]:  # the tools deciding now (a snapshot set by hand without tools: the first)
        return self.snapshot.tools or self._tools

    # --- inputs -----------------------------------------------------------------------------------

    def remember(self, trace: ReviewTrace) -> None:
        """Keep the decision-time evidence of items sent to humans until their answers arrive."""
        for j, item in enumerate(trace.batch.items):
            self.pending[item.key] = PendingReview(
                trace.batch, j, trace.logp[j], trace.voted[j], float(trace.confidence[j]),
                trace.predicted[j], trace.kinds[j], bool(trace.would_accept[j]), trace.trained_on,
            )

    def label_counts(self) -> np.ndarray:  # i20: answers per label (safe while a retrain runs)
        return np.bincount(np.asarray(self._gt_y, dtype=np.int64), minlength=len(self.labels))

    def observe(self, answers: Iterable[GroundTruth],
                known: Mapping[str, CalibrationRecord] | None = None) -> list[CalibrationRecord]:
        """Take human answers; returns the calibration records they produced.

        ``known`` holds stored calibration records for answers to items this learner did not decide
        itself (another worker did): they join the calibration set with their decision-time scores.
        """
        records: list[CalibrationRecord] = []
        pieces: list[tuple[Batch | None, list[Any]]] = []  # the new training rows in order, by source batch
        for answer in answers:
            y = self._label_index.get(answer.label)
            if y is None:
                continue  # the store validates labels; a label of an older policy is skipped
            if answer.correction:
                self._correct(answer, y, pieces)
                continue
            pending = self.pending.pop(answer.item.key, None)
            self._seq += 1
            row = len(self._gt_y)
            self._gt_y.append(y)
            self._gt_keys.append(answer.item.key)
            self._gt_row[answer.item.key] = row
            self._since_retrain += 1
            if pending is None:
                add_piece(pieces, None, answer.item)
                self._gt_logp.append(None)
                self._gt_voted.append(None)
                stored = known.get(answer.item.key) if known else None
                if stored is not None and stored.kind in CALIBRATION_KINDS:
                    self._add_calibration(row, stored.confidence, stored.predicted)
                continue
            add_piece(pieces, pending.source, pending.row)
            self._gt_logp.append(pending.logp)
            self._gt_voted.append(pending.voted)
            self._agg_rows.append((row, pending.trained_on))
            rec = CalibrationRecord(answer.item.key, pending.confidence, pending.predicted, answer.label,
                                    pending.kind, self._seq)
            records.append(rec)
            if pending.kind == "audit" and pending.would_accept:
                self._audits.append((len(self._iid_rows), rec.correct))
            if pending.kind in CALIBRATION_KINDS:
                self._add_calibration(row, pending.confidence, pending.predicted)
        # One subset per run of answers from the same graph run, not one per item (each costs a sparse matrix).
        self._gt_batches.extend(Batch(part) if source is None else source.subset(part) for source, part in pieces)
        return records

    def _correct(self, answer: GroundTruth, y: int, pieces: list[tuple[Batch | None, list[Any]]]) -> None:
        """A corrected label: the item's training label becomes ``y`` (a new training row if it had none). The
        calibration set and the audits are left as they are."""
        key = answer.item.key
        self._since_retrain += 1
        # Pending only if the correction replaced a review answer before this learner read it: its decision-time
        # votes still train the pool, but the item does not join the calibration set here.
        pending = self.pending.pop(key, None)
        row = self._gt_row.get(key)
        if row is not None:
            self._gt_y[row] = y
            return
        row = len(self._gt_y)
        self._gt_y.append(y)
        self._gt_keys.append(key)
        self._gt_row[key] = row
        if pending is None:
            add_piece(pieces, None, answer.item)
            self._gt_logp.append(None)
            self._gt_voted.append(None)
            return
        add_piece(pieces, pending.source, pending.row)
        self._gt_logp.append(pending.logp)
        self._gt_voted.append(pending.voted)
        self._agg_rows.append((row, pending.trained_on))

    def _add_calibration(self, row: int, confidence: float, predicted: str | None, truth: int | None = None) -> None:
        pred = self._label_index.get(predicted) if predicted is not None else None
        self._iid_rows.append(row)
        self._iid_conf.append(confidence)
        self._iid_pred.append(-1 if pred is None else pred)
        self._iid_y.append(self._gt_y[row] if truth is None else truth)
        self._iid_fold.append(self._fold_of(row))

    def load(self, ground_truth: Sequence[GroundTruth], calibration: Sequence[CalibrationRecord],
             votes: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
             trained_on: Mapping[str, int] | None = None) -> None:
        """Restore from storage (ground truth, calibration records, votes and their models' training rows), retrain."""
        kinds = {rec.key: rec for rec in calibration}
        votes = votes or {}
        for gt in ground_truth:
            y = self._label_index.get(gt.label)
            if y is None:
                continue
            row = len(self._gt_y)
            self._gt_batches.append(Batch([gt.item]))
            self._gt_y.append(y)
            self._gt_keys.append(gt.item.key)
            self._gt_row[gt.item.key] = row
            logp, voted = votes.get(gt.item.key, (None, None))
            self._gt_logp.append(logp)
            self._gt_voted.append(voted)
            if logp is not None:  # the pool refits on decision-time votes
                self._agg_rows.append((row, (trained_on or {}).get(gt.item.key)))
            rec = kinds.get(gt.item.key)
            if rec is None or rec.kind not in CALIBRATION_KINDS:
                continue
            if not gt.correction:
                self._add_calibration(row, rec.confidence, rec.predicted)
            elif (truth := self._label_index.get(rec.truth)) is not None:
                # a corrected calibration item stays in the set with the truth its review gave, as before restarting
                self._add_calibration(row, rec.confidence, rec.predicted, truth)
        for rec in calibration:
            self._seq = max(self._seq, rec.seq)
        if self._gt_y:
            self.retrain(force_rescore=True)
        else:
            self.recalibrate()

    # --- learning ---------------------------------------------------------------------------------

    @property
    def n_ground_truth(self) -> int:
        return len(self._gt_y)

    def retrain_due(self) -> bool:
        return self._since_retrain >= retrain_step(self.n_ground_truth, self.policy.retrain_every)

    def training_set(self) -> TrainingSet:
        if self._gt_batches:
            self._gt_batch = Batch.concat([self._gt_batch, *self._gt_batches])
            self._gt_batches = []
        return TrainingSet(self._gt_batch, np.asarray(self._gt_y, dtype=np.int64), self.labels)

    def retrain(self, force_rescore: bool = False) -> list[ModelInfo]:
        """``prepare_retrain`` and ``publish`` at once (a restore, or a caller with nothing deciding meanwhile)."""
        retrained = self.prepare_retrain(force_rescore)
        self.publish(retrained)
        return retrained.infos

    def prepare_retrain(self, force_rescore: bool = False) -> Retrained:
        """Retrain copies of the learning tools, refit the pool, rescore the calibration set when due, recertify;
        in force only at ``publish`` (the snapshot in force decides meanwhile). CPU-bound (run in a thread); until
        ``publish`` call no ``observe`` nor ``recalibrate`` (the worker cycle holds answers back)."""
        tools = stage(self.tools)
        data = self.training_set()
        window = self._window_rows()  # i18: past the window's cap, a bounded subset trains (agent/schedule.py)
        fit_data = data if window is None else TrainingSet(data.batch.subset(window), data.y[window], self.labels)
        start = self._window_start()
        due = force_rescore or self.n_ground_truth >= RESCORE_GROWTH * max(self._rescored_at, RESCORE_MIN)
        rescore = due and len(self._iid_rows) - start >= RESCORE_FOLDS
        jobs = fold_jobs(tools, self._fold_tools, data, window, (np.asarray(self._iid_rows, dtype=np.int64),
                                                                 np.asarray(self._iid_fold, dtype=np.int64), start),
                         [vote_bound(t, self.policy) for t in tools]) if rescore else []  # bounded as in the graph
        # The retrain's fits and the rescoring's fold fits in one pool (agent/folds.py): all independent.
        infos, votes = fit_together([(t, fit_data) for t in tools if isinstance(t, Learnable)], jobs, self.labels,
                                    parallel=len(fit_data.y) >= PARALLEL_FROM)
        self._since_retrain = 0
        aggregator = self._fit_aggregator(len(fit_data.y))
        if rescore:
            self._rescore(start, aggregator, tools, (jobs, votes))
        with self._segment:  # the certificate and the snapshot that carries it, as of one calibration segment
            calib, drifted, reference = self._certify()
            return Retrained(self._snapshot(tools, aggregator, calib, drifted, len(fit_data.y)), infos, reference)

    def publish(self, retrained: Retrained) -> AgentSnapshot:
        """Put a finished retrain in force: its models, pool and threshold together. If another snapshot was
        published meanwhile (a drift alarm withdrew the certificate), its threshold is certified again first."""
        self.model_infos.extend(retrained.infos)
        self.retrains += 1
        snap = retrained.snapshot
        if snap.version <= self.snapshot.version:
            return self.recalibrate(snap.aggregator, snap.tools, snap.trained_on)
        if retrained.reference is not None:
            self.monitor.set_reference(retrained.reference)
        self.snapshot = snap
        return snap

    def _fit_aggregator(self, trained_on: int) -> AggregatorModel:
        """The pool for models fitted on ``trained_on`` rows, its rows weighted by ``maturity_weights``."""
        aggregator = self.snapshot.aggregator
        rows = [r for r, _ in self._agg_rows]
        counts = np.bincount(np.asarray(self._gt_y), minlength=len(self.labels)).astype(np.float64)
        if not rows:
            return aggregator
        logp = np.stack([self._gt_logp[r] for r in rows])  # type: ignore[misc]
        voted = np.stack([self._gt_voted[r] for r in rows])  # type: ignore[misc]
        y = np.asarray([self._gt_y[r] for r in rows])
        return fit_aggregator(aggregator, logp, voted, y, counts,
                              row_weights=maturity_weights([k for _, k in self._agg_rows], trained_on))

    def _window_rows(self) -> np.ndarray | None:
        """The training window's rows (``None``: all), after registering the rows added since the last call."""
        with self._segment:  # a drift alarm restarts the window
            while self.window.n < len(self._gt_y):
                self.window.add(self._gt_y[self.window.n])
            return self.window.rows()

    def _rescore(self, start: int, aggregator: AggregatorModel, tools: tuple[Tool, ...],
                 fitted: tuple[Sequence[FoldJob], Sequence[Votes]]) -> None:
        """Score the calibration items from ``start`` with models that never saw them: the fold models' votes (K-fold
        cross-fitting, ``fitted``), pooled by ``aggregator``."""
        rows = self._iid_rows[start:]
        logp, voted = rescored_votes([(self._gt_logp[r], self._gt_voted[r]) for r in rows],
                                     (len(tools), len(self.labels)), fitted)
        proba = cascade_proba(aggregator, logp, voted, cheap_mask(self.policy, tools), self.policy.settle_level)
        has_vote = voted.any(axis=1)
        conf = np.where(has_vote, proba.max(axis=1), 0.0)
        pred = np.where(has_vote, proba.argmax(axis=1), -1)
        self._iid_conf[start:start + len(rows)] = conf.tolist()
        self._iid_pred[start:start + len(rows)] = pred.tolist()
        self._rescored_at = self.n_ground_truth
        self.rescores += 1

    def _fold_of(self, row: int) -> int:  # stable, by item key: a fold's model never sees its items, stays warm
        return zlib.crc32(self._gt_keys[row].encode("utf-8")) % RESCORE_FOLDS

    def _window_start(self) -> int:
        return max(len(self._iid_rows) - self.policy.calibration_window, self._calibration_since, 0)

    def recalibrate(self, aggregator: AggregatorModel | None = None, tools: tuple[Tool, ...] = (),
                    trained_on: int | None = None) -> AgentSnapshot:
        """Check drift, update the certificate, publish a new snapshot (the tools in force, or ``tools``)."""
        with self._segment:
            calib, drifted, reference = self._certify()
            if reference is not None:
                self.monitor.set_reference(reference)
            self.snapshot = self._snapshot(tools or self.tools, aggregator or self.snapshot.aggregator, calib,
                                           drifted, trained_on)
            return self.snapshot

    def _certify(self) -> tuple[ThresholdResult, bool, float | None]:
        """Drift check and certificate update: (result, drifted, the monitor's reference for a new certificate)."""
        policy = self.policy
        del self._audits[:-DRIFT_AUDITS]  # i18: only the latest audits are ever read; the list stays bounded
        recent = [(pos, ok) for pos, ok in self._audits if pos >= self._calibration_since]
        drift = detect_drift([ok for _, ok in recent], alpha=policy.alpha, delta=policy.delta)
        drifted = drift.drifted and drift.n_audits >= MIN_DRIFT_AUDITS
        if drifted:  # recent data takes over: the calibration set restarts with the audits that showed the drift
            self._restart_calibration(recent[0][0])
        start = self._calibration_since
        pred = np.asarray(self._iid_pred[start:], dtype=np.int64)
        # Items predicted as a label always reviewed are never auto-labeled: not certified (items without a vote stay)
        eligible = ~np.isin(pred, [self._label_index[lab] for lab in self._always])
        truth = np.asarray(self._iid_y[start:], dtype=np.int64)
        correct = (pred == truth)[eligible]
        previous = self.certifier.certificate
        if previous is not None and self.monitor.holding:  # i14: no renewal on a segment whose share is moving
            return previous, drifted, None
        strata = tuple((truth == self._label_index[lab])[eligible] for lab in policy.critical_labels)
        calib = self.certifier.update(np.asarray(self._iid_conf[start:], dtype=np.float64)[eligible], correct, strata)
        if new_certificate(previous, self.certifier.certificate):  # a new certificate: the monitor watches its share
            return calib, drifted, 1.0 - calib.n_above / max(calib.n_calibration, 1)
        return calib, drifted, None

    def _snapshot(self, tools: tuple[Tool, ...], aggregator: AggregatorModel, calib: ThresholdResult,
                  drifted: bool, trained_on: int | None = None) -> AgentSnapshot:
        """The next snapshot (version: the one in force plus one); not yet in force."""
        audit_rate = 1.0 if calib.threshold is None else raised_audit_rate(
            self.policy, calib, fine=FINE_CALIBRATION, per_escalation=AUDIT_PER_ESCALATION)
        versions = {tool.name: tool.version for tool in tools if isinstance(tool, Learnable)}
        versions["aggregator"] = f"aggregator-v{aggregator.version}"
        versions["calibration"] = f"calibration-v{self.snapshot.version + 1}"
        return AgentSnapshot(aggregator, calib, audit_rate, versions, self.snapshot.version + 1, drifted,
                             certifier=self.certifier.state(), tools=tools,
                             trained_on=self.snapshot.trained_on if trained_on is None else trained_on)

    def _restart_calibration(self, since: int) -> None:
        """Drift: the certificate is withdrawn and calibration restarts from ``since`` (recent data only)."""
        self._calibration_since, self._audits = since, []
        self.window.restart()  # i18: the old regime trains only through each class's most recent rows
        self.certifier.reset()
        self.monitor.set_reference(None)
        self.drift_detections += 1

    def watch(self, result: BatchResult) -> None:
        """i14 hook, called after every graph run: feed the label-free monitor; on an alarm auto-labeling pauses
        (a snapshot without a threshold) and calibration restarts from the items that arrive from now on. Under the
        segment lock: a retrain running beside this (the service's) certifies wholly before or after the restart."""
        with self._segment:
            if result.threshold is not None and self.monitor.watch(
                    eligible_below(result.decisions, result.threshold, self._always)):
                self._restart_calibration(len(self._iid_rows))
                withdrawn = ThresholdResult(None, 0, 0, 0, 1.0)
                self.snapshot = self._snapshot(self.tools, self.snapshot.aggregator, withdrawn, True)
