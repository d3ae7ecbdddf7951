"""Keeping a worker's batch leases alive while the batch runs.

The heartbeat runs in its own thread: a graph run keeps the event loop busy for long stretches (vectorised
tool calls are CPU-bound), and a heartbeat task on that loop would be starved exactly when it matters.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from service.store import SqlStore
from service.store.db import is_transient

log = logging.getLogger("labelagent.runtime")
RETRY_SECONDS = 0.25  # the next try after a beat failed because the database was unreachable


@dataclass(slots=True)
class _Held:
    project: str
    due: float


class LeaseHeartbeat:
    """Extends every held lease by ``lease_seconds`` each ``lease_seconds / 3``, from a daemon thread."""

    def __init__(self, store: SqlStore, lease_seconds: float, *, name: str = "heartbeat") -> None:
        self.store = store
        self.lease_seconds = float(lease_seconds)
        self.interval = max(self.lease_seconds / 3.0, 0.05)
        self.beats = 0
        self._held: dict[str, _Held] = {}
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def start(self) -> None:
        self._thread.start()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout=5)

    @contextmanager
    def hold(self, project: str, token: str) -> Iterator[None]:
        """Keep ``token``'s lease alive for the duration of the ``with`` block."""
        with self._cond:
            self._held[token] = _Held(project, time.monotonic() + self.interval)
            self._cond.notify_all()
        try:
            yield
        finally:
            with self._cond:
                self._held.pop(token, None)

    def _run(self) -> None:
        while True:
            with self._cond:
                if self._closed:
                    return
                now = time.monotonic()
                due = [(token, held.project) for token, held in self._held.items() if held.due <= now]
                if not due:
                    nxt = min((held.due for held in self._held.values()), default=now + self.interval)
                    self._cond.wait(timeout=max(nxt - now, 0.01))
                    continue
                for token, _ in due:
                    self._held[token].due = now + self.interval
            for token, project in due:
                try:
                    n = self.store.items.extend_lease(project, token, lease_seconds=self.lease_seconds)
                except Exception as exc:  # retried soon (the database restarting) or at the next beat
                    if not is_transient(exc):
                        log.exception("heartbeat: extending lease of %s failed", project)
                        continue
                    log.warning("heartbeat: extending lease of %s failed, database unavailable; retrying", project)
                    with self._cond:
                        held = self._held.get(token)
                        if held is not None:
                            held.due = min(held.due, time.monotonic() + RETRY_SECONDS)
                    continue
                self.beats += 1
                if n == 0 and token in self._held:
                    log.warning("heartbeat: %s lost the lease of its batch (expired and taken over?)", project)
