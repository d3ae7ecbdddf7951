"""The worker cycle: claim a batch under a lease, run the agent once, record the result (retried while the
database is away), feed human answers to the learner, retrain in a thread, save the new model versions.

:class:`ProjectWorker` is the one implementation of these steps: the service's runtime
(:mod:`service.runtime`), ``labelagent replay`` and backtests (:func:`service.replay.stream_through`) call
it, so the replay measures the path the service takes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

from agent.ports import BatchResult, CalibrationRecord, GroundTruth
from agent.runner import BatchLabeler
from policies import InputError
from service.db import backoff_delay, is_transient
from service.settings import image_limits
from service.store import RecordResult, SqlStore
from service.waiting import WaitingQueue
from tools.base import Item, ModelInfo
from tools.images import open_image

T = TypeVar("T")
log = logging.getLogger("labelagent.runtime")
DB_BACKOFF = 2.0  # longest wait between tries while the database is unreachable (it comes back within seconds)
WRITE_RETRY_SECONDS = 60.0  # a batch's write is retried this long; past its lease it is fenced anyway


@dataclass(slots=True)
class BatchOutcome:
    items: int
    result: BatchResult | None = None
    record: RecordResult | None = None


@dataclass(slots=True)
class ProjectWorker:
    """Runs one project's agent against the store. Not shared between threads."""

    store: SqlStore
    project: str
    labeler: BatchLabeler
    name: str = "worker"
    batch_size: int = 256
    lease_seconds: float | None = None
    min_batch_size: int = 32
    saved_versions: set[str] = field(default_factory=set)
    waiting: WaitingQueue = field(default_factory=WaitingQueue)  # i20: re-decides the review queue

    def claim_size(self) -> int:
        """Items to claim next: small while the agent has little ground truth, ``batch_size`` after.

        Early on every answer changes the models a lot, and a smaller batch lets the next run use it;
        once there are twice ``batch_size`` human answers, full batches keep the per-run overhead low.
        """
        learner = self.labeler.learner
        if learner.snapshot.threshold is None:  # cold start: every item goes to a human; stop as soon as it may
            return min(self.min_batch_size, self.batch_size)
        learned = learner.n_ground_truth
        return max(min(self.min_batch_size, self.batch_size), min(self.batch_size, learned // 2))

    async def process_batch(self) -> BatchOutcome:
        """One claim, one graph run, one write transaction. Returns how many items it handled."""
        token, items = self.claim()
        if not items:
            return BatchOutcome(0)
        return await self.run_claimed(token, items)

    def claim(self) -> tuple[str, list[Item]]:
        """Lease the next batch: (lease token, items); no items when nothing is claimable. Items whose stored
        image the limits refuse (read from the header: a decompression bomb is never decoded) are marked failed
        with the reason at once, and the batch goes on without them."""
        while True:
            token, items = self.store.claim_batch(self.project, worker=self.name, size=self.claim_size(),
                                                  lease_seconds=self.lease_seconds)
            usable = self.screen_images(token, items)
            if usable or not items:  # a batch of refused images only: claim the next one
                return token, usable

    def screen_images(self, token: str, items: list[Item]) -> list[Item]:
        """``items`` without those whose image fails the header checks of ``tools.images.open_image`` under the
        settings' image limits; those are marked failed with the reason."""
        if not any(it.image is not None for it in items):
            return items
        limits = image_limits(self.store.settings)
        refused: dict[str, str] = {}
        for it in items:
            if it.image is not None:
                try:
                    open_image(it.image, limits)
                except InputError as exc:
                    refused[it.key] = f"image refused: {exc}"
        if refused:
            self.store.fail_items(self.project, token, refused)
        return [it for it in items if it.key not in refused]

    async def run_claimed(self, token: str, items: Sequence[Item]) -> BatchOutcome:
        """The graph run and the write for a claimed batch (the runtime heartbeats the lease meanwhile)."""
        result = await self.labeler.run_batch(items)
        return BatchOutcome(len(items), result, await self.record(result, token))

    async def record(self, result: BatchResult, token: str) -> RecordResult:
        """Write a batch's result, retried with backoff while the database is unreachable (the graph run is not
        repeated). Repeating the write is safe: a failed transaction wrote nothing, and if one committed but its
        connection dropped before the answer, the retry finds the items no longer leased under ``token`` and
        fences them (the lease check and the writes share one transaction, under row locks); the unique label
        constraint refuses a second label anyway. Items whose lease expired meanwhile are fenced, and come back
        to whoever claims them next."""
        return await self._retrying(lambda: self.store.record_batch(self.project, result, token),
                                    f"writing a batch of {self.project}")

    async def _retrying(self, write: Callable[[], T], what: str) -> T:
        deadline = time.monotonic() + WRITE_RETRY_SECONDS
        attempt = 0
        while True:
            try:
                return write()
            except Exception as exc:
                attempt += 1
                delay = backoff_delay(attempt, cap=DB_BACKOFF)
                if not is_transient(exc) or time.monotonic() + delay > deadline:
                    raise
                log.warning("worker %s: %s failed, database unavailable (%s); retry %d in %.2fs",
                            self.name, what, exc, attempt, delay)
                await asyncio.sleep(delay)

    # --- learning ------------------------------------------------------------------------------------------

    def observe(self, answers: Sequence[GroundTruth], known: Mapping[str, CalibrationRecord] | None = None) -> bool:
        """Feed settled human answers to the learner. True when a retrain is due (start it with ``retrain``);
        otherwise the learner has recalibrated on them already."""
        learner = self.labeler.learner
        learner.observe(answers, known)
        if learner.retrain_due():
            return True
        learner.recalibrate()
        return False

    async def redecide_waiting(self) -> dict[str, str]:
        """i20: after learning (not while a retrain runs), let a new certified snapshot decide the review queue's
        waiting items again (``service/waiting.py``); returns the items it auto-labeled (key -> label)."""
        step = await self.waiting.step(self.store, self.project, self.labeler, actor=self.name)
        return {} if step is None else step[1]

    def retrain(self) -> asyncio.Task[list[ModelInfo]]:
        """The retraining, in a thread: returns its task. Meanwhile this thread may claim and ingest (store work
        the retraining does not read); the learner must not be used until the task is done. Pass its result to
        ``save_versions``: the next graph run then reads the retrained snapshot."""
        return asyncio.create_task(asyncio.to_thread(self.labeler.learner.retrain), name=f"retrain-{self.project}")

    def start_learning(self, answers: Sequence[GroundTruth]) -> asyncio.Task[list[ModelInfo]] | None:
        """``observe``, then ``retrain`` when due (None when not due)."""
        return self.retrain() if self.observe(answers) else None

    async def learn(self, answers: Sequence[GroundTruth]) -> list[ModelInfo]:
        """``start_learning``, waiting for the retrain and saving the new model versions."""
        training = self.start_learning(answers)
        if training is None:
            return []
        infos = await training
        await self.save_versions(infos)
        return infos

    async def save_versions(self, infos: Sequence[ModelInfo]) -> None:
        """Record model versions not saved yet (in the caller's thread: the store is not shared), retried while the
        database is unreachable."""
        for info in infos:
            if info.version not in self.saved_versions:
                await self._retrying(partial(self.store.save_model_version, self.project, self.labeler.policy.key,
                                             info), f"saving model version {info.version} of {self.project}")
                self.saved_versions.add(info.version)
