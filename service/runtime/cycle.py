"""The worker cycle: claim a batch under a lease, run the agent once, record the result (retried while the
database is away), feed human answers to the learner, retrain in a thread, publish the retrained snapshot between
graph runs and save its model versions.

:class:`ProjectWorker` is the one implementation of these steps: the service's runtime
(:mod:`service.runtime`, which ``labelagent replay --url`` drives over HTTP), ``labelagent replay`` and backtests
(:func:`service.offline.replay.stream_through`) call it, so the replay measures the path the service takes.

**When a retrain is picked up** (:meth:`ProjectWorker.pick_up`, called before every claim). A retrain fits copies
of the models; until it is published, the snapshot in force (its models, pool and threshold together) decides, and
answers that arrive are held back (the learner belongs to the retrain). The service (``retrain_lag=None``) publishes
a retrain as soon as it has finished, between two graph runs, and until then holds the project's next batch
(:meth:`ProjectWorker.holds_batches`), at most ``retrain_wait`` seconds from the retrain's start
(``LABELAGENT_RETRAIN_WAIT_SECONDS``, 10 by default): a batch decided meanwhile would be decided by models the new
answers are not in yet, and on a stream of many classes under load that sent a fifth of it more to humans
(DESIGN-NOTES section 12, "A project's next batch waits for its retrain"). Other projects of the worker go on,
and a slow or stuck fit never stops the labeling: past the wait the snapshot in force decides, escalating what it
cannot certify. The replay cannot use the clock and stay deterministic, so it states a lag: a retrain started
after graph run ``k`` is published just before run ``k + retrain_lag``, computed at once. ``retrain_lag=1`` (the
replay's default) is the service with fits shorter than ``retrain_wait``; ``n > 1`` is a service whose fits outlast
the wait by ``n - 1`` graph runs (or one that does not wait: ``retrain_wait`` 0).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TypeVar

from agent.ports import BatchResult, CalibrationRecord, GroundTruth
from agent.runner import BatchLabeler
from agent.state import Retrained
from policies import InputError
from service.runtime.certified import Published, publish
from service.runtime.waiting import WaitingQueue
from service.settings import Settings, image_limits
from service.store import RecordResult, SqlStore
from service.store.db import backoff_delay, is_transient
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
class Retraining:
    """A retrain in flight: its task, and the number of graph runs made when it started."""

    task: asyncio.Task[Retrained]
    after: int
    started: float = field(default_factory=time.monotonic)


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
    retrain_lag: int | None = None  # None: publish a retrain once finished (the service); n: before run k + n
    # the service: seconds a retrain in flight holds the next batch (from its start); the deployment's setting
    retrain_wait: float = Settings.model_fields["retrain_wait_seconds"].default
    runs: int = 0  # graph runs made
    training: Retraining | None = None  # started, not yet published: the learner belongs to it
    backlog: list[GroundTruth] = field(default_factory=list)  # answers held back while a retrain runs
    retrain_seconds: float = 0.0  # thread time of the retrains (measured, reported; never used to decide)
    published: Published | None = None  # i14: the snapshot last persisted (service.runtime.certified.publish)
    waiting: WaitingQueue = field(default_factory=WaitingQueue)  # i20: re-decides the review queue
    tool_failures: Counter[str] = field(default_factory=Counter)  # graph runs in which each tool's call raised

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
            token, items = self.store.items.claim_batch(self.project, worker=self.name, size=self.claim_size(),
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
            self.store.items.fail_items(self.project, token, refused)
        return [it for it in items if it.key not in refused]

    async def run_claimed(self, token: str, items: Sequence[Item]) -> BatchOutcome:
        """The graph run and the write for a claimed batch (the runtime heartbeats the lease meanwhile)."""
        self.published = publish(self.store, self.project, self.labeler, self.name, self.published)
        result = await self.labeler.run_batch(items, self.published[1])  # decided by the snapshot just persisted
        self.runs += 1
        for tool, why in result.tool_failures.items():  # its items wait for humans where its vote could matter
            self.tool_failures[tool] += 1
            log.warning("%s: tool %s failed in a batch of %d items: %s", self.project, tool, len(items), why)
        return BatchOutcome(len(items), result, await self.record(result, token))

    async def record(self, result: BatchResult, token: str) -> RecordResult:
        """Write a batch's result, retried with backoff while the database is unreachable (the graph run is not
        repeated). Repeating the write is safe: a failed transaction wrote nothing, and if one committed but its
        connection dropped before the answer, the retry finds the items no longer leased under ``token`` and
        fences them (the lease check and the writes share one transaction, under row locks); the unique label
        constraint refuses a second label anyway. Items whose lease expired meanwhile are fenced, and come back
        to whoever claims them next."""
        return await self._retrying(lambda: self.store.items.record_batch(self.project, result, token, actor=self.name),
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

    def take(self, fresh: Sequence[GroundTruth]) -> list[GroundTruth]:
        """The answers to feed the learner now: those held back and ``fresh``. Empty while a retrain runs (then
        ``fresh`` are held back until it is published)."""
        if self.training is not None:
            self.backlog.extend(fresh)
            return []
        answers, self.backlog = [*self.backlog, *fresh], []
        return answers

    def hold_back(self, answers: Sequence[GroundTruth]) -> None:
        """Answers taken but not fed (their calibration records could not be read): fed first next time."""
        self.backlog[:0] = answers

    def observe(self, answers: Sequence[GroundTruth], known: Mapping[str, CalibrationRecord] | None = None) -> bool:
        """Feed settled human answers to the learner (taken with ``take``: never while a retrain runs). True when a
        retrain is due (start it with ``start_retrain``); otherwise the learner has recalibrated on them already."""
        assert self.training is None, "the learner belongs to the retrain in flight"
        learner = self.labeler.learner
        learner.observe(answers, known)
        if learner.retrain_due():
            return True
        learner.recalibrate()
        return False

    async def redecide_waiting(self) -> dict[str, str]:
        """i20: once a new certified snapshot is in force, let it decide the review queue's waiting items again
        (``service/runtime/waiting.py``); returns the items it auto-labeled (key -> label). Nothing while a retrain
        runs (the learner belongs to it; its snapshot re-decides once published); before a certificate, waiting
        items are promoted to samples when none is left unanswered, also while a retrain runs."""
        if self.training is not None:
            self.waiting.promote(self.store, self.project, self.labeler, actor=self.name)
            return {}
        self.published = publish(self.store, self.project, self.labeler, self.name, self.published)
        step = await self.waiting.step(self.store, self.project, self.labeler, actor=self.name,
                                       snapshot_id=self.published[1].stored_id)
        return {} if step is None else step[1]

    def start_retrain(self) -> asyncio.Task[Retrained]:
        """The retrain, in a thread: fits copies of the models and certifies them; nothing changes what decides
        until ``pick_up`` publishes it. Meanwhile this worker claims, runs and records with the snapshot in force."""
        learner = self.labeler.learner

        def timed() -> Retrained:
            started = time.thread_time()
            try:
                return learner.prepare_retrain()
            finally:
                self.retrain_seconds += time.thread_time() - started

        task = asyncio.create_task(asyncio.to_thread(timed), name=f"retrain-{self.project}")
        self.training = Retraining(task, self.runs)
        return task

    def feed(self, fresh: Sequence[GroundTruth], known: Mapping[str, CalibrationRecord] | None = None) -> bool:
        """``take``, ``observe`` and ``start_retrain`` when due: True when a retrain started."""
        answers = self.take(fresh)
        if answers and self.observe(answers, known):
            self.start_retrain()
            return True
        return False

    def pick_up_due(self) -> bool:
        """Whether the retrain in flight is to be published before the next graph run (see the module doc)."""
        training = self.training
        if training is None:
            return False
        if self.retrain_lag is None:
            return training.task.done()
        if self.labeler.learner.snapshot.threshold is None:
            return True
        return self.runs >= training.after + self.retrain_lag - 1

    def holds_batches(self) -> bool:
        """The service: whether the next batch waits for the retrain in flight (unfinished, started less than
        ``retrain_wait`` seconds ago). The replay's lag says when a retrain is in force instead."""
        training = self.training
        return (self.retrain_lag is None and training is not None and not training.task.done()
                and time.monotonic() - training.started < self.retrain_wait)

    async def pick_up(self, *, now: bool = False) -> list[ModelInfo] | None:
        """Between graph runs: publish the retrain in flight when due (``now``: at once, waiting for it), then save
        its model versions. Returns what it published (None: nothing). A failed retrain raises here; the snapshot in
        force stays and the learner is free again."""
        if self.training is None or not (now or self.pick_up_due()):
            return None
        training, self.training = self.training, None
        retrained = await training.task
        self.labeler.learner.publish(retrained)
        await self.save_versions(retrained.infos)
        return retrained.infos

    async def learn(self, fresh: Sequence[GroundTruth]) -> None:
        """The replay's feed: ``feed``; with a ``retrain_lag`` the retrain it starts is computed at once (from the
        state as of this run, as the service's thread reads it: no answer reaches the learner meanwhile), so nothing
        runs beside the next graph runs, and ``pick_up`` publishes it when due."""
        if self.feed(fresh) and self.retrain_lag is not None and self.training is not None:
            await asyncio.wait([self.training.task])

    async def save_versions(self, infos: Sequence[ModelInfo]) -> None:
        """Record model versions not saved yet (in the caller's thread: the store is not shared), retried while the
        database is unreachable."""
        for info in infos:
            if info.version not in self.saved_versions:
                await self._retrying(partial(self.store.learning.save_model_version, self.project,
                                             self.labeler.policy.key,
                                             info), f"saving model version {info.version} of {self.project}")
                self.saved_versions.add(info.version)
