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
Composed of parts that share one :class:`~service.runtime.base.RuntimeState` (the constants, the per-project loop
state and the statistics are in :mod:`~service.runtime.base`): a :class:`~service.runtime.batches.BatchRunner`
(claiming, running and recording a batch; isolating the items that fail it), a
:class:`~service.runtime.learning.Trainer` (answers to the learner, background retraining) and a
:class:`~service.runtime.projects.ProjectLoader` (new projects and policy versions); the loop itself and its
thread-safe controls are :class:`WorkerRuntime`, here.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable, Iterable

from agent.runner import BatchLabeler
from service.runtime.base import (
    DB_BACKOFF,
    ISOLATION_RUNS,
    MAX_ERROR_BACKOFF,
    MIN_IDLE_SECONDS,
    ProjectLoop,
    RuntimeState,
    RuntimeStats,
    ToolsFactory,
    describe_error,
    log,
    registry_tools,
)
from service.runtime.batches import BatchRunner
from service.runtime.cycle import WRITE_RETRY_SECONDS
from service.runtime.heartbeat import LeaseHeartbeat
from service.runtime.learning import Trainer
from service.runtime.projects import ProjectLoader
from service.settings import Settings
from service.store import SqlStore
from service.store.db import is_transient


class WorkerRuntime:
    """Runs the agent over the store for every project (or ``projects``). Implements ``FeedbackSink``.

    ``run()`` is a coroutine; ``stop``, ``abort`` and ``notify`` may be called from any thread.
    """

    def __init__(self, store: SqlStore, settings: Settings | None = None, *, name: str,
                 projects: Iterable[str] | None = None, tools_factory: ToolsFactory | None = None,
                 batch_size: int | None = None, seed: int = 0) -> None:
        self.state = RuntimeState(store, settings, name=name, projects=projects, tools_factory=tools_factory,
                                  batch_size=batch_size, seed=seed)
        self.batches = BatchRunner(self.state)
        self.trainer = Trainer(self.state)
        self.projects = ProjectLoader(self.state)

    @property
    def store(self) -> SqlStore:
        return self.state.store

    @property
    def settings(self) -> Settings:
        return self.state.settings

    @property
    def name(self) -> str:
        return self.state.name

    @property
    def batch_size(self) -> int:
        return self.state.batch_size

    @property
    def lease_seconds(self) -> float:
        return self.state.lease_seconds

    @property
    def stats(self) -> RuntimeStats:
        return self.state.stats

    # --- control (thread-safe) ---------------------------------------------------------------------------

    def notify(self, project: str) -> None:
        """Something happened in ``project`` (items, answers, a policy): wake up now rather than at the next poll."""
        self._call_soon(self._on_notify, project)

    def stop(self) -> None:
        """Finish the current batch, claim nothing more, return from ``run``."""
        self.state.stopping = True
        self._call_soon(self.state.set_wake)

    def abort(self) -> None:
        """Stop now: cancel the current batch (its lease is released) and return from ``run``."""
        self.state.stopping = True
        task = self.state.task
        if task is not None:
            self._call_soon(task.cancel)

    @property
    def stopping(self) -> bool:
        return self.state.stopping

    def labeler(self, project: str) -> BatchLabeler | None:
        """The labeler serving ``project`` now (None until it has loaded)."""
        loop = self.state.loops.get(project)
        return loop.labeler if loop is not None else None

    def _call_soon(self, fn: Callable[..., object], *args: object) -> None:
        loop = self.state.loop
        if loop is None or loop.is_closed():
            return
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(fn, *args)

    def _on_notify(self, project: str) -> None:
        state = self.state
        state.notified.add(project)
        if project not in state.loops and project not in state.building:
            state.next_refresh = 0.0
        state.set_wake()

    # --- the loop ----------------------------------------------------------------------------------------

    async def run(self) -> None:
        """Work until :meth:`stop` (or :meth:`abort`)."""
        state = self.state
        state.loop = asyncio.get_running_loop()
        state.wake = asyncio.Event()
        state.task = asyncio.current_task()
        state.heartbeat = LeaseHeartbeat(state.store, state.lease_seconds, name=f"{state.name}-heartbeat")
        state.heartbeat.start()
        log.info("worker %s started (batch %d, lease %.0fs)", state.name, state.batch_size, state.lease_seconds)
        idle = MIN_IDLE_SECONDS
        try:
            while not state.stopping:
                self.projects.adopt_built()
                self.projects.refresh()
                try:
                    worked = await self._round()
                except Exception as exc:  # each step handles its errors; a database outage must not end the worker
                    if not is_transient(exc):
                        raise
                    log.warning("worker %s: database unavailable (%s); backing off", state.name, exc)
                    state.stats.errors += 1
                    await self._idle(DB_BACKOFF)
                    continue
                if worked:
                    idle = MIN_IDLE_SECONDS
                    await asyncio.sleep(0)  # let finished builds and trainings report
                    continue
                if state.stopping:
                    break
                await self._idle(idle)
                idle = min(idle * 2, state.settings.worker_poll_seconds)
        finally:
            state.heartbeat.close()
            for task in state.building.values():
                task.cancel()
            await self.trainer.finish()
            log.info("worker %s stopped: %s", state.name, state.stats)

    async def _idle(self, timeout: float) -> None:
        wake = self.state.wake
        assert wake is not None
        if not wake.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), timeout)
        wake.clear()

    async def _round(self) -> bool:
        """One batch per ready project, and their answers when due. True when any batch had items."""
        state = self.state
        worked = False
        notified, state.notified = state.notified, set()
        for loop in list(state.loops.values()):
            if state.stopping:
                break
            now = time.monotonic()
            if loop.paused or now < loop.retry_at:
                continue
            await self.trainer.pick_up(loop)  # between batches: a finished retrain is put in force
            # ... and while one is still being fitted (a bounded time), this project's next batch waits for it
            if not loop.worker.holds_batches() and await self.batches.process(loop):
                worked = True
            if loop.project in notified or time.monotonic() >= loop.next_feed:
                await self.trainer.learn(loop)
        state.stats.rounds += 1
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
