"""One batch of a project: claim it under a lease, run the graph, record the result; and when the run fails,
single out the items that fail (bisection) so one poison item does not fail its neighbours."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

from service.runtime.base import (
    ISOLATION_RUNS,
    ProjectLoop,
    RuntimeState,
    describe_error,
    log,
)
from service.runtime.cycle import BatchOutcome
from service.store.db import is_transient
from tools.base import Item


class BatchRunner:
    """Claiming, running and recording batches, and isolating the items that fail them."""

    def __init__(self, state: RuntimeState) -> None:
        self.state = state

    async def process(self, loop: ProjectLoop) -> int:
        """Claim, run and record one batch; the lease is released if the run fails or is cancelled. When the
        batch fails, its items are run again in halves (:meth:`_isolate`) so one poison item does not fail
        its neighbours: the items that still fail are given back with the reason (``failed`` after
        ``max_attempts`` claims)."""
        state = self.state
        assert state.heartbeat is not None
        try:
            token, items = loop.worker.claim()
        except Exception as exc:
            state.stats.errors += 1
            state.log_error(f"claiming in {loop.project} failed", exc)
            if is_transient(exc):
                loop.db_failed()
            else:
                loop.failed()
            return 0
        if not items:
            return 0
        try:
            with state.heartbeat.hold(loop.project, token):
                try:
                    outcomes = [await self._run_claimed(loop, token, items)]
                except Exception as exc:
                    if is_transient(exc):
                        raise  # the database, not the items: no isolation, the batch is released below
                    log.warning("worker %s: a batch of %d items in %s failed (%s); isolating the items that fail",
                                state.name, len(items), loop.project, describe_error(exc))
                    outcomes = await self._isolate(loop, token, items, exc)
        except asyncio.CancelledError:
            self._release(loop.project, token)
            raise
        except Exception as exc:
            state.stats.errors += 1
            if is_transient(exc):
                log.warning("worker %s: a batch of %d items in %s could not be written, database unavailable (%s); "
                            "releasing it", state.name, len(items), loop.project, describe_error(exc))
                self._release(loop.project, token)
                loop.db_failed()
                return 0
            log.exception("worker %s: a batch of %d items in %s failed; releasing it", state.name, len(items),
                          loop.project)
            self._release(loop.project, token)
            loop.failed()
            return 0
        if not outcomes:  # nothing went through: maybe the tools or the database are down, so back off
            loop.failed()
            return 0
        loop.errors = 0
        s = state.stats
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
        state = self.state
        state.stats.errors += 1
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
                log.warning("worker %s: item %s of %s failed: %s", state.name, keys[0], loop.project, error)
            try:
                state.stats.released += state.store.items.release_lease(loop.project, token, keys=keys, error=error)
            except Exception:  # the lease expires by itself
                log.exception("worker %s: releasing %d items in %s failed", state.name, len(keys), loop.project)
        self._release(loop.project, token)  # anything else still held (nothing, normally)
        return outcomes

    async def _run_claimed(self, loop: ProjectLoop, token: str, items: Sequence[Item]) -> BatchOutcome:
        """One graph run over claimed items, then its write (retried while the database is away)."""
        return await loop.worker.run_claimed(token, items)

    def _release(self, project: str, token: str) -> None:
        try:
            self.state.stats.released += self.state.store.items.release_lease(project, token)
        except Exception as exc:  # the lease expires by itself
            self.state.log_error(f"releasing a lease in {project} failed (it expires by itself)", exc)
