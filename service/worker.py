"""The worker loop's unit of work: claim a batch under a lease, run the agent once, record the result.

The in-process replay and ``labelagent worker`` share this code, so the replay measures the path
the service takes.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass, field

from agent.ports import BatchResult, GroundTruth
from agent.runner import BatchLabeler
from policies import InputError
from service.settings import image_limits
from service.store import RecordResult, SqlStore
from tools.base import Item, ModelInfo
from tools.images import open_image


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
        record = self.store.record_batch(self.project, result, token)
        return BatchOutcome(len(items), result, record)

    async def learn(self, answers: Sequence[GroundTruth]) -> list[ModelInfo]:
        """Feed settled human answers to the learner; retrain when due and remember new versions."""
        training = self.start_learning(answers)
        if training is None:
            return []
        infos = await training
        self.save_versions(infos)
        return infos

    def start_learning(self, answers: Sequence[GroundTruth]) -> asyncio.Task[list[ModelInfo]] | None:
        """``learn`` with the retraining, when due, in a thread: returns its task (None when not due).

        Await the task before the next graph run and pass its result to ``save_versions``: the graph then
        reads the retrained snapshot exactly as after ``learn``, and meanwhile this thread may claim and
        ingest (store work the retraining does not read). The learner must not be used until it finishes.
        """
        learner = self.labeler.learner
        learner.observe(answers)
        if not learner.retrain_due():
            learner.recalibrate()
            return None
        return asyncio.create_task(asyncio.to_thread(lambda: asyncio.run(learner.retrain())),
                                   name=f"retrain-{self.project}")

    def save_versions(self, infos: Sequence[ModelInfo]) -> None:
        """Record model versions not saved yet (in the caller's thread: the store is not shared)."""
        for info in infos:
            if info.version not in self.saved_versions:
                self.store.save_model_version(self.project, self.labeler.policy.key, info)
                self.saved_versions.add(info.version)
        return infos
