"""The worker runtime: label every project's pending items, batch by batch, and learn from human answers.

One :class:`WorkerRuntime` per worker process (or per ``labelagent serve``). For each project it serves it
keeps one :class:`~agent.runner.BatchLabeler` for the project's active policy version, restored from the
store at start (ground truth and calibration records), and loops:

* claim a batch under a lease, run the graph once, record the result in one transaction
  (:class:`~service.runtime.cycle.ProjectWorker`, the code path the replay measures); a heartbeat thread extends
  the lease while the batch runs, and a batch that fails or is cancelled gives its lease back;
* read new human answers from the store (:class:`~service.runtime.feedback.AnswerFeed`: the API that took them may
  be another process) and feed them to the learner; retraining runs in a worker thread, so claiming never
  waits for training, and answers that arrive meanwhile wait for the next round;
* notice a newly activated policy version and switch labelers between batches (the project pauses while
  the new labeler loads, so no batch is labeled under the old version after the switch is seen);
* when there is nothing to do, wait for :meth:`WorkerRuntime.notify` (the in-process API calls it) or the
  next poll, backing off up to ``worker_poll_seconds``.

:meth:`stop` is graceful: the current batch finishes, nothing new is claimed. :meth:`abort` cancels the
current batch and releases its lease. A killed worker's items come back when their lease expires.
Split by concern: :mod:`~service.runtime.base` (the constants, the per-project loop state, the statistics),
:mod:`~service.runtime.batches` (claiming, running and recording a batch; isolating the items that fail it),
:mod:`~service.runtime.learning` (answers to the learner, background retraining) and
:mod:`~service.runtime.projects` (new projects and policy versions); the loop itself and its thread-safe controls
are :class:`WorkerRuntime`, here.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable

from agent.runner import BatchLabeler
from service.runtime.base import (
    DB_BACKOFF,
    ISOLATION_RUNS,
    MAX_ERROR_BACKOFF,
    MIN_IDLE_SECONDS,
    ProjectLoop,
    RuntimeBase,
    RuntimeStats,
    ToolsFactory,
    describe_error,
    log,
    registry_tools,
)
from service.runtime.batches import BatchesMixin
from service.runtime.cycle import WRITE_RETRY_SECONDS
from service.runtime.heartbeat import LeaseHeartbeat
from service.runtime.learning import LearningMixin
from service.runtime.projects import ProjectsMixin
from service.store.db import is_transient


class WorkerRuntime(BatchesMixin, LearningMixin, ProjectsMixin, RuntimeBase):
    """Runs the agent over the store for every project (or ``projects``). Implements ``FeedbackSink``.

    ``run()`` is a coroutine; ``stop``, ``abort`` and ``notify`` may be called from any thread.
    """

    # --- control (thread-safe) ---------------------------------------------------------------------------

    def notify(self, project: str) -> None:
        """Something happened in ``project`` (items, answers, a policy): wake up now rather than at the next poll."""
        self._call_soon(self._on_notify, project)

    def stop(self) -> None:
        """Finish the current batch, claim nothing more, return from ``run``."""
        self._stopping = True
        self._call_soon(self._set_wake)

    def abort(self) -> None:
        """Stop now: cancel the current batch (its lease is released) and return from ``run``."""
        self._stopping = True
        task = self._task
        if task is not None:
            self._call_soon(task.cancel)

    @property
    def stopping(self) -> bool:
        return self._stopping

    def labeler(self, project: str) -> BatchLabeler | None:
        """The labeler serving ``project`` now (None until it has loaded)."""
        loop = self._loops.get(project)
        return loop.labeler if loop is not None else None

    def _call_soon(self, fn: Callable[..., object], *args: object) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(fn, *args)

    def _on_notify(self, project: str) -> None:
        self._notified.add(project)
        if project not in self._loops and project not in self._building:
            self._next_refresh = 0.0
        self._set_wake()

    # --- the loop ----------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Work until :meth:`stop` (or :meth:`abort`)."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._task = asyncio.current_task()
        self._heartbeat = LeaseHeartbeat(self.store, self.lease_seconds, name=f"{self.name}-heartbeat")
        self._heartbeat.start()
        log.info("worker %s started (batch %d, lease %.0fs)", self.name, self.batch_size, self.lease_seconds)
        idle = MIN_IDLE_SECONDS
        try:
            while not self._stopping:
                self._adopt_built()
                self._refresh()
                try:
                    worked = await self._round()
                except Exception as exc:  # each step handles its errors; a database outage must not end the worker
                    if not is_transient(exc):
                        raise
                    log.warning("worker %s: database unavailable (%s); backing off", self.name, exc)
                    self.stats.errors += 1
                    await self._idle(DB_BACKOFF)
                    continue
                if worked:
                    idle = MIN_IDLE_SECONDS
                    await asyncio.sleep(0)  # let finished builds and trainings report
                    continue
                if self._stopping:
                    break
                await self._idle(idle)
                idle = min(idle * 2, self.settings.worker_poll_seconds)
        finally:
            self._heartbeat.close()
            for task in self._building.values():
                task.cancel()
            await self._finish_training()
            log.info("worker %s stopped: %s", self.name, self.stats)

    async def _idle(self, timeout: float) -> None:
        assert self._wake is not None
        if not self._wake.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
        self._wake.clear()

    async def _round(self) -> bool:
        """One batch per ready project, and their answers when due. True when any batch had items."""
        worked = False
        notified, self._notified = self._notified, set()
        for loop in list(self._loops.values()):
            if self._stopping:
                break
            now = time.monotonic()
            if loop.paused or now < loop.retry_at:
                continue
            if await self._process(loop):
                worked = True
            if loop.project in notified or time.monotonic() >= loop.next_feed:
                await self._learn(loop)
        return worked


__all__ = [
    "DB_BACKOFF",
    "ISOLATION_RUNS",
    "MAX_ERROR_BACKOFF",
    "MIN_IDLE_SECONDS",
    "WRITE_RETRY_SECONDS",
    "ProjectLoop",
    "RuntimeStats",
    "ToolsFactory",
    "WorkerRuntime",
    "describe_error",
    "registry_tools",
]
