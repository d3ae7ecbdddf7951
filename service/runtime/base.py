"""What the worker runtime's parts share: its constants, the per-project loop state, the statistics, and
:class:`RuntimeState` (the runtime's settings and mutable state, held by :class:`~service.runtime.WorkerRuntime` and
handed to each of its parts: :class:`~service.runtime.batches.BatchRunner`, :class:`~service.runtime.learning.Trainer`
and :class:`~service.runtime.projects.ProjectLoader`)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial

from agent.runner import BatchLabeler
from policies import Policy
from service.runtime.cycle import DB_BACKOFF, ProjectWorker
from service.runtime.feedback import AnswerFeed
from service.runtime.heartbeat import LeaseHeartbeat
from service.settings import Settings, get_settings, tool_environment
from service.store import SqlStore
from service.store.db import is_transient
from tools.base import Tool
from tools.environment import ToolEnvironment

log = logging.getLogger("labelagent.runtime")

ToolsFactory = Callable[[Policy], Sequence[Tool]]
MIN_IDLE_SECONDS = 0.02
MAX_ERROR_BACKOFF = 30.0
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
    redecided: int = 0  # i20: waiting items run through the graph again (service/runtime/waiting.py)
    switches: int = 0
    errors: int = 0
    rounds: int = 0  # passes over the projects (a batch each where one is claimable)


@dataclass(slots=True)
class ProjectLoop:
    """One project's labeler for one policy version, with its answer feed (its worker holds the retrain in flight
    and the answers held back meanwhile)."""

    project: str
    policy: Policy
    worker: ProjectWorker
    feed: AnswerFeed
    paused: bool = False  # a new policy version is loading
    next_feed: float = 0.0
    retry_at: float = 0.0
    errors: int = 0

    @property
    def labeler(self) -> BatchLabeler:
        return self.worker.labeler

    def failed(self, cap: float = MAX_ERROR_BACKOFF) -> None:
        self.errors += 1
        self.retry_at = time.monotonic() + min(cap, 0.5 * 2 ** min(self.errors, 8))

    def db_failed(self) -> None:
        """The database is unreachable (restarting): retry soon, it is not the project's fault."""
        self.failed(DB_BACKOFF)


class RuntimeState:
    """The state of one :class:`~service.runtime.WorkerRuntime`, shared by its parts (one event loop: no locks).

    ``loops``: the projects served now; ``building``: labelers loading; ``broken``: (project, version) -> when to try
    loading again; ``notified``: projects to look at in the next round; ``loop``, ``wake``, ``task`` and ``heartbeat``
    exist while ``run`` runs."""

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
        self.loops: dict[str, ProjectLoop] = {}
        self.building: dict[str, asyncio.Task[ProjectLoop]] = {}
        self.broken: dict[tuple[str, int], float] = {}
        self.notified: set[str] = set()
        self.next_refresh = 0.0
        self.stopping = False
        self.loop: asyncio.AbstractEventLoop | None = None
        self.wake: asyncio.Event | None = None
        self.task: asyncio.Task[None] | None = None
        self.heartbeat: LeaseHeartbeat | None = None

    def set_wake(self, *_: object) -> None:
        if self.wake is not None:
            self.wake.set()

    def log_error(self, what: str, exc: Exception) -> None:
        """A warning without traceback while the database is unreachable; the traceback for anything else."""
        if is_transient(exc):
            log.warning("worker %s: %s, database unavailable (%s)", self.name, what, describe_error(exc))
        else:
            log.error("worker %s: %s", self.name, what, exc_info=exc)
