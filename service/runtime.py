"""The worker runtime: label every project's pending items, batch by batch, and learn from human answers.

One :class:`WorkerRuntime` per worker process (or per ``labelagent serve``). For each project it serves it
keeps one :class:`~agent.runner.BatchLabeler` for the project's active policy version, restored from the
store at start (ground truth and calibration records), and loops:

* claim a batch under a lease, run the graph once, record the result in one transaction
  (:class:`~service.worker.ProjectWorker`, the code path the replay measures); a heartbeat thread extends
  the lease while the batch runs, and a batch that fails or is cancelled gives its lease back;
* read new human answers from the store (:class:`~service.feedback.AnswerFeed`: the API that took them may
  be another process) and feed them to the learner; retraining runs in a worker thread, so claiming never
  waits for training, and answers that arrive meanwhile wait for the next round;
* notice a newly activated policy version and switch labelers between batches (the project pauses while
  the new labeler loads, so no batch is labeled under the old version after the switch is seen);
* when there is nothing to do, wait for :meth:`WorkerRuntime.notify` (the in-process API calls it) or the
  next poll, backing off up to ``worker_poll_seconds``.

:meth:`stop` is graceful: the current batch finishes, nothing new is claimed. :meth:`abort` cancels the
current batch and releases its lease. A killed worker's items come back when their lease expires.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from functools import partial

from agent.ports import BatchResult, GroundTruth
from agent.runner import BatchLabeler
from policies import Policy
from service.db import backoff_delay, is_transient, retry_transient
from service.feedback import AnswerFeed
from service.heartbeat import LeaseHeartbeat
from service.settings import Settings, get_settings, tool_environment
from service.store import RecordResult, SqlStore
from service.worker import BatchOutcome, ProjectWorker
from tools.base import Item, ModelInfo, Tool
from tools.environment import ToolEnvironment

log = logging.getLogger("labelagent.runtime")

ToolsFactory = Callable[[Policy], Sequence[Tool]]
MIN_IDLE_SECONDS = 0.02
MAX_ERROR_BACKOFF = 30.0
DB_BACKOFF = 2.0  # longest wait between tries while the database is unreachable (it comes back within seconds)
WRITE_RETRY_SECONDS = 60.0  # a batch's write is retried this long; past its lease it is fenced anyway
ISOLATION_RUNS = 24  # runs spent after a failed batch to single out the items that fail (2·log2(batch) per item)


def describe_error(exc: BaseException) -> str:
    """The reason kept on a failed item: the exception's type and message."""
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def registry_tools(policy: Policy, env: ToolEnvironment | None = None) -> Sequence[Tool]:
    """The policy's tools, built by ``tools.registry`` (imported on first use) with the deployment's ``env``."""
    from tools.registry import build_tools

    return build_tools(policy, env=env)


@dataclass(slots=True)
class RuntimeStats:
    batches: int = 0
    items: int = 0
    labeled: int = 0
    queued: int = 0
    fenced: int = 0
    released: int = 0
    answers: int = 0
    retrains: int = 0
    switches: int = 0
    errors: int = 0


@dataclass(slots=True)
class ProjectLoop:
    """One project's labeler for one policy version, with its answer feed and background trainer."""

    project: str
    policy: Policy
    worker: ProjectWorker
    feed: AnswerFeed
    training: asyncio.Task[None] | None = None
    backlog: list[GroundTruth] = field(default_factory=list)
    paused: bool = False  # a new policy version is loading
    next_feed: float = 0.0
    retry_at: float = 0.0
    errors: int = 0

    @property
    def labeler(self) -> BatchLabeler:
        return self.worker.labeler

    @property
    def training_now(self) -> bool:
        return self.training is not None and not self.training.done()

    def failed(self, cap: float = MAX_ERROR_BACKOFF) -> None:
        self.errors += 1
        self.retry_at = time.monotonic() + min(cap, 0.5 * 2 ** min(self.errors, 8))

    def db_failed(self) -> None:
        """The database is unreachable (restarting): retry soon, it is not the project's fault."""
        self.failed(DB_BACKOFF)


class WorkerRuntime:
    """Runs the agent over the store for every project (or ``projects``). Implements ``FeedbackSink``.

    ``run()`` is a coroutine; ``stop``, ``abort`` and ``notify`` may be called from any thread.
    """

    def __init__(self, store: SqlStore, settings: Settings | None = None, *, name: str,
                 projects: Iterable[str] | None = None, tools_factory: ToolsFactory | None = None,
                 batch_size: int | None = None, seed: int = 0) -> None:
        self.store = store
        self.settings = settings or get_settings()
        self.name = name
        self.only = frozenset(projects) if projects is not None else None
        self.tools_factory = tools_factory or partial(registry_tools, env=tool_environment(self.settings))
        self.batch_size = batch_size or self.settings.batch_size
        self.lease_seconds = float(self.settings.lease_seconds)
        self.seed = seed
        self.stats = RuntimeStats()
        self._loops: dict[str, ProjectLoop] = {}
        self._building: dict[str, asyncio.Task[ProjectLoop]] = {}
        self._broken: dict[tuple[str, int], float] = {}  # (project, version) -> retry time
        self._notified: set[str] = set()
        self._next_refresh = 0.0
        self._stopping = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self._heartbeat: LeaseHeartbeat | None = None

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

    def _set_wake(self, *_: object) -> None:
        if self._wake is not None:
            self._wake.set()

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

    async def _process(self, loop: ProjectLoop) -> int:
        """Claim, run and record one batch; the lease is released if the run fails or is cancelled. When the
        batch fails, its items are run again in halves (:meth:`_isolate`) so one poison item does not fail
        its neighbours: the items that still fail are given back with the reason (``failed`` after
        ``max_attempts`` claims)."""
        assert self._heartbeat is not None
        try:
            token, items = loop.worker.claim()
        except Exception as exc:
            self.stats.errors += 1
            self._log_error(f"claiming in {loop.project} failed", exc)
            if is_transient(exc):
                loop.db_failed()
            else:
                loop.failed()
            return 0
        if not items:
            return 0
        try:
            with self._heartbeat.hold(loop.project, token):
                try:
                    outcomes = [await self._run_claimed(loop, token, items)]
                except Exception as exc:
                    if is_transient(exc):
                        raise  # the database, not the items: no isolation, the batch is released below
                    log.warning("worker %s: a batch of %d items in %s failed (%s); isolating the items that fail",
                                self.name, len(items), loop.project, describe_error(exc))
                    outcomes = await self._isolate(loop, token, items, exc)
        except asyncio.CancelledError:
            self._release(loop.project, token)
            raise
        except Exception as exc:
            self.stats.errors += 1
            if is_transient(exc):
                log.warning("worker %s: a batch of %d items in %s could not be written, database unavailable (%s); "
                            "releasing it", self.name, len(items), loop.project, describe_error(exc))
                self._release(loop.project, token)
                loop.db_failed()
                return 0
            log.exception("worker %s: a batch of %d items in %s failed; releasing it", self.name, len(items),
                          loop.project)
            self._release(loop.project, token)
            loop.failed()
            return 0
        if not outcomes:  # nothing went through: maybe the tools or the database are down, so back off
            loop.failed()
            return 0
        loop.errors = 0
        s = self.stats
        for outcome in outcomes:
            rec = outcome.record
            s.batches += 1
            s.items += outcome.items
            if rec is not None:
                s.labeled += rec.labeled
                s.queued += rec.queued
                s.fenced += len(rec.fenced)
        return sum(o.items for o in outcomes)

    async def _isolate(self, loop: ProjectLoop, token: str, items: Sequence[Item], exc: Exception
                       ) -> list[BatchOutcome]:
        """Bisect a failed batch: run each half again (under the same lease), split the halves that fail, down to
        single items, within ``ISOLATION_RUNS`` runs. The groups that still fail are released with their error.
        Returns the outcomes of the runs that succeeded."""
        self.stats.errors += 1
        outcomes: list[BatchOutcome] = []
        failing: list[tuple[Sequence[Item], str]] = []
        stack: list[tuple[Sequence[Item], str]] = [(items, describe_error(exc))]
        budget = ISOLATION_RUNS
        while stack:
            group, error = stack.pop()
            if len(group) == 1 or budget <= 0:
                failing.append((group, error))
                continue
            mid = len(group) // 2
            for half in (group[mid:], group[:mid]):
                if budget <= 0:
                    failing.append((half, error))
                    continue
                budget -= 1
                try:
                    outcomes.append(await self._run_claimed(loop, token, half))
                except Exception as sub:
                    if is_transient(sub):
                        raise  # the database went away: not these items' fault
                    stack.append((half, describe_error(sub)))
        for group, error in failing:
            keys = [it.key for it in group]
            if len(group) == 1:
                log.warning("worker %s: item %s of %s failed: %s", self.name, keys[0], loop.project, error)
            try:
                self.stats.released += self.store.release_lease(loop.project, token, keys=keys, error=error)
            except Exception:  # the lease expires by itself
                log.exception("worker %s: releasing %d items in %s failed", self.name, len(keys), loop.project)
        self._release(loop.project, token)  # anything else still held (nothing, normally)
        return outcomes

    async def _run_claimed(self, loop: ProjectLoop, token: str, items: Sequence[Item]) -> BatchOutcome:
        """One graph run over claimed items, then its write (:meth:`_record`)."""
        result = await loop.labeler.run_batch(items)
        return BatchOutcome(len(items), result, await self._record(loop, result, token))

    async def _record(self, loop: ProjectLoop, result: BatchResult, token: str) -> RecordResult:
        """Write a batch's result, retried with backoff while the database is unreachable (the graph run is not
        repeated). Repeating the write is safe: a failed transaction wrote nothing, and if one committed but its
        connection dropped before the answer, the retry finds the items no longer leased under ``token`` and
        fences them (the lease check and the writes share one transaction, under row locks); the unique label
        constraint refuses a second label anyway. Items whose lease expired meanwhile are fenced, and come back
        to whoever claims them next."""
        deadline = time.monotonic() + WRITE_RETRY_SECONDS
        attempt = 0
        while True:
            try:
                return self.store.record_batch(loop.project, result, token)
            except Exception as exc:
                attempt += 1
                delay = backoff_delay(attempt, cap=DB_BACKOFF)
                if not is_transient(exc) or time.monotonic() + delay > deadline:
                    raise
                log.warning("worker %s: writing a batch of %s failed, database unavailable (%s); retry %d in %.2fs",
                            self.name, loop.project, describe_error(exc), attempt, delay)
                await asyncio.sleep(delay)

    def _release(self, project: str, token: str) -> None:
        try:
            self.stats.released += self.store.release_lease(project, token)
        except Exception as exc:  # the lease expires by itself
            self._log_error(f"releasing a lease in {project} failed (it expires by itself)", exc)

    def _log_error(self, what: str, exc: Exception) -> None:
        """A warning without traceback while the database is unreachable; the traceback for anything else."""
        if is_transient(exc):
            log.warning("worker %s: %s, database unavailable (%s)", self.name, what, describe_error(exc))
        else:
            log.error("worker %s: %s", self.name, what, exc_info=exc)

    # --- learning ----------------------------------------------------------------------------------------

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
        learner.observe(answers, known)
        self.stats.answers += len(answers)
        if learner.retrain_due():
            loop.training = asyncio.create_task(self._retrain(loop), name=f"retrain-{loop.project}")
            loop.training.add_done_callback(self._set_wake)
        else:
            learner.recalibrate()

    async def _retrain(self, loop: ProjectLoop) -> None:
        learner, worker = loop.labeler.learner, loop.worker

        def train() -> None:
            infos = asyncio.run(learner.retrain())
            retry_transient(lambda: self._save_versions(worker, infos), what=f"saving model versions of {loop.project}",
                            timeout=WRITE_RETRY_SECONDS, cap=DB_BACKOFF)

        try:
            await asyncio.to_thread(train)
            self.stats.retrains += 1
        except Exception:
            log.exception("worker %s: retraining %s failed", self.name, loop.project)
            self.stats.errors += 1

    @staticmethod
    def _save_versions(worker: ProjectWorker, infos: Iterable[ModelInfo]) -> None:
        for info in infos:
            if info.version not in worker.saved_versions:
                worker.store.save_model_version(worker.project, worker.labeler.policy.key, info)
                worker.saved_versions.add(info.version)

    async def _finish_training(self) -> None:
        tasks = [loop.training for loop in self._loops.values() if loop.training_now]
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)  # threads cannot be cancelled; they are short

    # --- projects and policy versions ----------------------------------------------------------------------

    def _refresh(self) -> None:
        """Start loading labelers for new projects and newly activated policy versions (throttled)."""
        now = time.monotonic()
        if now < self._next_refresh:
            return
        self._next_refresh = now + self.settings.refresh_seconds
        try:
            projects = self.store.list_projects()
        except Exception as exc:
            self._log_error("listing projects failed", exc)
            return
        for p in projects:
            if (self.only is not None and p.name not in self.only) or p.active_version is None:
                continue
            current = self._loops.get(p.name)
            if p.name in self._building or (current is not None and current.policy.version == p.active_version):
                continue
            if self._broken.get((p.name, p.active_version), 0.0) > now:
                continue
            if current is not None:
                current.paused = True  # no batch under the old version once the new one is seen
            task = asyncio.create_task(self._build(p.name), name=f"load-{p.name}")
            task.add_done_callback(self._set_wake)
            self._building[p.name] = task

    async def _build(self, project: str) -> ProjectLoop:
        policy = self.store.active_policy(project)
        labeler = BatchLabeler(policy, self.tools_factory(policy), seed=self.seed)
        worker = ProjectWorker(self.store, project, labeler, name=self.name, batch_size=self.batch_size,
                               lease_seconds=self.lease_seconds)
        feed = AnswerFeed(self.store, project, lag_seconds=self.settings.feedback_lag_seconds)

        def load() -> None:
            answers = feed.start()
            calibration = self.store.load_calibration(project, policy.calibration_window)
            asyncio.run(labeler.learner.load(answers, calibration))
            self._save_versions(worker, labeler.learner.model_infos)

        await asyncio.to_thread(load)
        return ProjectLoop(project, policy, worker, feed)

    def _adopt_built(self) -> None:
        """Swap in labelers that finished loading (between batches: this runs only between rounds)."""
        for project, task in list(self._building.items()):
            if not task.done():
                continue
            del self._building[project]
            old = self._loops.get(project)
            exc = None if task.cancelled() else task.exception()
            if task.cancelled() or exc is not None:
                log.error("worker %s: cannot load the labeler of %s: %r", self.name, project, exc)
                self.stats.errors += 1
                version = old.policy.version if old is not None else 0
                try:
                    version = self.store.get_project(project).active_version or version
                except Exception:  # retried at the next refresh anyway
                    log.debug("worker %s: reading project %s failed", self.name, project, exc_info=True)
                wait = DB_BACKOFF if exc is not None and is_transient(exc) else MAX_ERROR_BACKOFF
                self._broken[(project, version)] = time.monotonic() + wait
                if old is not None and old.policy.version == version:
                    old.paused = False
                continue
            new = task.result()
            self._loops[project] = new
            if old is not None:
                self.stats.switches += 1
                log.info("worker %s: %s now labels with %s (was %s)", self.name, project, new.policy.key,
                         old.policy.key)
            else:
                log.info("worker %s: serving %s with %s (%d answers loaded)", self.name, project, new.policy.key,
                         new.feed.delivered)
