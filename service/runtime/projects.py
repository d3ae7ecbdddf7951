"""The projects a runtime serves and their policy versions: a labeler is loaded in the background for each new
project and each newly activated version, and swapped in between batches."""

from __future__ import annotations

import asyncio
import time

from agent.runner import BatchLabeler
from service.runtime.base import DB_BACKOFF, MAX_ERROR_BACKOFF, ProjectLoop, RuntimeState, log
from service.runtime.certified import restore_labeler
from service.runtime.cycle import ProjectWorker
from service.runtime.feedback import AnswerFeed
from service.store.db import is_transient


class ProjectLoader:
    """Loading labelers for new projects and policy versions, and switching to them between batches."""

    def __init__(self, state: RuntimeState) -> None:
        self.state = state

    def refresh(self) -> None:
        """Start loading labelers for new projects and newly activated policy versions (throttled)."""
        state = self.state
        now = time.monotonic()
        if now < state.next_refresh:
            return
        state.next_refresh = now + state.settings.refresh_seconds
        try:
            projects = state.store.projects.list_projects()
        except Exception as exc:
            state.log_error("listing projects failed", exc)
            return
        for p in projects:
            if (state.only is not None and p.name not in state.only) or p.active_version is None:
                continue
            current = state.loops.get(p.name)
            if p.name in state.building or (current is not None and current.policy.version == p.active_version):
                continue
            if state.broken.get((p.name, p.active_version), 0.0) > now:
                continue
            if current is not None:
                current.paused = True  # no batch under the old version once the new one is seen
            task = asyncio.create_task(self._build(p.name), name=f"load-{p.name}")
            task.add_done_callback(state.set_wake)
            state.building[p.name] = task

    async def _build(self, project: str) -> ProjectLoop:
        state = self.state
        store = state.store
        policy = store.projects.active_policy(project)
        labeler = BatchLabeler(policy, state.tools_factory(policy), seed=state.seed)
        worker = ProjectWorker(store, project, labeler, name=state.name, batch_size=state.batch_size,
                               lease_seconds=state.lease_seconds, retrain_wait=state.settings.retrain_wait_seconds)
        feed = AnswerFeed(store, project, lag_seconds=state.settings.feedback_lag_seconds)

        def load() -> None:
            restore_labeler(store, project, labeler, feed.start())  # i14: the certificate in force goes on

        await asyncio.to_thread(load)
        await worker.save_versions(labeler.learner.model_infos)
        return ProjectLoop(project, policy, worker, feed)

    def adopt_built(self) -> None:
        """Swap in labelers that finished loading (between batches: this runs only between rounds)."""
        state = self.state
        for project, task in list(state.building.items()):
            if not task.done():
                continue
            del state.building[project]
            old = state.loops.get(project)
            exc = None if task.cancelled() else task.exception()
            if task.cancelled() or exc is not None:
                self._failed(project, old, exc)
                continue
            new = task.result()
            state.loops[project] = new
            if old is not None:
                state.stats.switches += 1
                log.info("worker %s: %s now labels with %s (was %s)", state.name, project, new.policy.key,
                         old.policy.key)
            else:
                log.info("worker %s: serving %s with %s (%d answers loaded)", state.name, project, new.policy.key,
                         new.feed.delivered)

    def _failed(self, project: str, old: ProjectLoop | None, exc: BaseException | None) -> None:
        """A labeler did not load: try that version again later; the old one (if still active) goes on."""
        state = self.state
        log.error("worker %s: cannot load the labeler of %s: %r", state.name, project, exc)
        state.stats.errors += 1
        version = old.policy.version if old is not None else 0
        try:
            version = state.store.projects.get_project(project).active_version or version
        except Exception:  # retried at the next refresh anyway
            log.debug("worker %s: reading project %s failed", state.name, project, exc_info=True)
        wait = DB_BACKOFF if exc is not None and is_transient(exc) else MAX_ERROR_BACKOFF
        state.broken[(project, version)] = time.monotonic() + wait
        if old is not None and old.policy.version == version:
            old.paused = False
