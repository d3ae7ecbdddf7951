"""The worker cycle's re-decision step (issue 20): when the learner has published a new certified snapshot, the
cold-start samples nobody claimed are released into the waiting escalations (``agent/queue_order.py``), and the
review queue's waiting items are decided again (``agent/redecide.py``) and the store closes or re-prioritizes
their tasks in one transaction (``service/store/redecide.py``). The service's runtime and the replay call it
through :meth:`service.runtime.cycle.ProjectWorker.redecide_waiting`. Before the first certificate the same step
promotes the oldest waiting items to samples when no sample is left unanswered.
"""

from __future__ import annotations

from dataclasses import dataclass

from agent.decisions import COLD_START_PRIORITY, COLD_START_REASON
from agent.ports import RELEASED_REASON, WAITING_REASON
from agent.queue_order import calibration_target
from agent.redecide import due, redecide
from agent.runner import BatchLabeler
from agent.state import AgentSnapshot
from service.store import SqlStore, parse_policy_key
from service.store.redecide import AutoLabel, RedecideOutcome, Reorder


@dataclass(slots=True)
class WaitingQueue:
    """Remembers the snapshot that last re-decided the queue; one per worker (not shared between threads)."""

    last: AgentSnapshot | None = None
    auto_labeled: int = 0  # waiting items the agent took over, this worker's count
    runs: int = 0
    items: int = 0  # waiting items run through the graph again, all re-decisions together
    released: int = 0  # cold-start samples released into the waiting escalations (nobody had claimed them)
    promoted: int = 0  # waiting cold-start items promoted to samples (no sample was left unanswered)

    async def step(self, store: SqlStore, project: str, labeler: BatchLabeler, *, actor: str,
                   snapshot_id: int | None = None) -> tuple[RedecideOutcome, dict[str, str]] | None:
        """Re-decide the waiting tasks when due; returns the store's outcome and the auto labels (key -> label),
        or None when nothing was due."""
        if not due(labeler, self.last):
            self.promote(store, project, labeler, actor=actor)
            return None
        snap = labeler.learner.snapshot
        self.last = snap
        version = parse_policy_key(project, labeler.policy.key)
        if labeler.queue.release:
            released = store.reviews.release_samples(project, policy_version=version, reason=RELEASED_REASON,
                                                     actor=actor)
            labeler.learner.pending.release(released)  # their answers, if humans still give them, will not calibrate
            self.released += len(released)
        waiting = store.reviews.waiting_tasks(project, policy_version=version)
        if not waiting:
            return None
        task_of = {w.item.key: w.task_id for w in waiting}
        unscreened = {w.item.key for w in waiting if w.reason in (WAITING_REASON, RELEASED_REASON)}
        result = await redecide(labeler, [w.item for w in waiting], seed=self.runs, unscreened=unscreened)
        self.runs += 1
        self.items += len(waiting)
        threshold = result.snapshot.threshold
        assert threshold is not None  # redecide accepts nothing without a certificate
        accepted = [AutoLabel(task_of[d.key], d.label or "", d.confidence, d.cost,
                              f"re-decided by snapshot {snap.version}: {d.reason}") for d in result.accepted]
        reordered = [Reorder(task_of[d.key], d.priority, d.label, d.confidence, d.reason) for d in result.waiting]
        outcome = store.reviews.settle_redecided(project, policy_version=version, threshold=threshold,
                                                 snapshot=snap.version, accepted=accepted, reordered=reordered,
                                                 actor=actor, snapshot_id=snapshot_id)
        self.auto_labeled += len(outcome.closed)
        closed = set(outcome.closed)
        labels = {d.key: d.label or "" for d in result.accepted if task_of[d.key] in closed}
        labeler.learner.pending.forget(set(labels))  # no answer will come for them
        return outcome, labels

    def promote(self, store: SqlStore, project: str, labeler: BatchLabeler, *, actor: str) -> None:
        """Still no certificate and no sample left unanswered (the store counts every worker's): the oldest waiting
        items become samples (up to the cap), so that an import, whose items all arrived before any answer, keeps
        calibrating. Also while a retrain runs: a fit that never ends must not leave the waiting items to nobody."""
        if not labeler.queue.sample_cold_start or labeler.learner.snapshot.threshold is not None:
            return
        promoted = store.reviews.promote_waiting(
            project, policy_version=parse_policy_key(project, labeler.policy.key),
            limit=calibration_target(labeler.policy), reason=COLD_START_REASON, priority=COLD_START_PRIORITY,
            actor=actor)
        labeler.learner.pending.promote(promoted)  # their answers calibrate (safe while a retrain runs: it reads none)
        self.promoted += len(promoted)
