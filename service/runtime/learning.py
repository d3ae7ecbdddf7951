"""Human answers to the learner, and retraining in a worker thread (claiming never waits for training)."""

from __future__ import annotations

import asyncio
import time

from service.runtime.base import ProjectLoop, RuntimeBase, log


class LearningMixin(RuntimeBase):
    """Feeding human answers to each project's learner, and retraining it in the background."""

    async def _learn(self, loop: ProjectLoop) -> None:
        loop.next_feed = time.monotonic() + self.settings.feedback_poll_seconds
        try:
            fresh = loop.feed.poll()
        except Exception as exc:
            self._log_error(f"reading answers of {loop.project} failed", exc)
            return
        if loop.training_now:
            loop.backlog.extend(fresh)  # the trainer owns the learner until it is done
            return
        answers, loop.backlog = [*loop.backlog, *fresh], []
        if not answers:
            return
        learner = loop.labeler.learner
        foreign = [a.item.key for a in answers if not learner.decided(a.item.key)]
        try:
            known = self.store.load_calibration_for(loop.project, foreign) if foreign else None
        except Exception as exc:
            self._log_error(f"reading calibration records of {loop.project} failed", exc)
            loop.backlog = answers  # observed at the next poll
            return
        due = loop.worker.observe(answers, known)
        self.stats.answers += len(answers)
        if due:
            loop.training = asyncio.create_task(self._retrain(loop), name=f"retrain-{loop.project}")
            loop.training.add_done_callback(self._set_wake)
        else:
            await self._redecide(loop)

    async def _redecide(self, loop: ProjectLoop) -> None:
        """i20: a new certified snapshot decides the queue's waiting items again (``service/waiting.py``)."""
        before = loop.worker.waiting.items
        try:
            await loop.worker.redecide_waiting()
            self.stats.redecided += loop.worker.waiting.items - before
        except Exception as exc:
            self._log_error(f"re-deciding the review queue of {loop.project} failed", exc)

    async def _retrain(self, loop: ProjectLoop) -> None:
        """The worker's retrain (in a thread: claiming goes on meanwhile), then its model versions saved."""
        try:
            await loop.worker.save_versions(await loop.worker.retrain())
            self.stats.retrains += 1
            await self._redecide(loop)
        except Exception:
            log.exception("worker %s: retraining %s failed", self.name, loop.project)
            self.stats.errors += 1

    async def _finish_training(self) -> None:
        tasks = [loop.training for loop in self._loops.values() if loop.training is not None and loop.training_now]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)  # threads cannot be cancelled; they are short
