"""Human answers to the learner, and retraining in a worker thread (a project's next batch waits for it a bounded
time, :meth:`~service.runtime.cycle.ProjectWorker.holds_batches`): the runtime's side of the worker cycle's learning
steps (:class:`~service.runtime.cycle.ProjectWorker` holds the rule)."""

from __future__ import annotations

import time

from service.runtime.base import ProjectLoop, RuntimeState, log


class Trainer:
    """Feeding human answers to each project's learner, retraining it in the background, and publishing a finished
    retrain between batches (the snapshot in force decides until then)."""

    def __init__(self, state: RuntimeState) -> None:
        self.state = state

    async def pick_up(self, loop: ProjectLoop, *, now: bool = False) -> None:
        """Publish the project's finished retrain (``now``: wait for the one in flight) and save its versions."""
        worker = loop.worker
        if worker.training is None:
            return
        try:
            if await worker.pick_up(now=now) is not None:
                self.state.stats.retrains += 1
                await self.redecide(loop)
        except Exception:
            log.exception("worker %s: retraining %s failed", self.state.name, loop.project)
            self.state.stats.errors += 1

    async def learn(self, loop: ProjectLoop) -> None:
        """Read the project's new answers and feed them (held back while a retrain runs); start a retrain when due."""
        state = self.state
        worker = loop.worker
        loop.next_feed = time.monotonic() + state.settings.feedback_poll_seconds
        await self.pick_up(loop)
        try:
            fresh = loop.feed.poll()
        except Exception as exc:
            state.log_error(f"reading answers of {loop.project} failed", exc)
            return
        answers = worker.take(fresh)
        if not answers:
            await self.redecide(loop)  # a new snapshot or, before a certificate, samples to promote
            return
        learner = loop.labeler.learner
        pending = learner.pending
        # Answers to items another worker decided come with their stored records; so do this worker's cold-start
        # samples, which another worker may have released meanwhile, and before a certificate its escalations,
        # which another worker may have promoted to samples (the stored kind says so).
        certified = learner.snapshot.threshold is not None
        doubtful = ("cold_start", None) if certified else ("cold_start", "escalation", None)
        asked = [a.item.key for a in answers if pending.kind(a.item.key) in doubtful]
        try:
            known = state.store.learning.load_calibration_for(loop.project, asked) if asked else None
        except Exception as exc:
            state.log_error(f"reading calibration records of {loop.project} failed", exc)
            worker.hold_back(answers)  # observed at the next poll
            return
        # ... and a sample whose stored record is no longer one (released) is an escalation here too
        pending.release(k for k, rec in (known or {}).items()
                        if pending.kind(k) == "cold_start" and rec.kind != "cold_start")
        pending.promote(k for k, rec in (known or {}).items() if rec.kind == "cold_start")  # ... or promoted
        due = worker.observe(answers, known)
        state.stats.answers += len(answers)
        if due:
            worker.start_retrain().add_done_callback(state.set_wake)
        else:
            await self.redecide(loop)

    async def redecide(self, loop: ProjectLoop) -> None:
        """i20: a new certified snapshot decides the queue's waiting items again (``service/runtime/waiting.py``)."""
        before = loop.worker.waiting.items
        try:
            await loop.worker.redecide_waiting()
            self.state.stats.redecided += loop.worker.waiting.items - before
        except Exception as exc:
            self.state.log_error(f"re-deciding the review queue of {loop.project} failed", exc)

    async def finish(self) -> None:
        """At stop: wait for the retrains in flight and publish them (threads cannot be cancelled; they are short)."""
        for loop in list(self.state.loops.values()):
            await self.pick_up(loop, now=True)
