"""The projects a runtime serves and their policy versions: a labeler is loaded in the background for each new
project and each newly activated version, and swapped in between batches."""

from __future__ import annotations

import asyncio
import time

from agent.runner import BatchLabeler
from service.certified import restore_labeler
from service.db import is_transient
from service.feedback import AnswerFeed
from service.runtime.base import DB_BACKOFF, MAX_ERROR_BACKOFF, ProjectLoop, RuntimeBase, log
from service.worker import ProjectWorker


class ProjectsMixin(RuntimeBase):
    """Loading labelers for new projects and policy versions, and switching to them between batches."""

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
            restore_labeler(self.store, project, labeler, feed.start())  # i14: the certificate in force goes on

        await asyncio.to_thread(load)
        await worker.save_versions(labeler.learner.model_infos)
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
