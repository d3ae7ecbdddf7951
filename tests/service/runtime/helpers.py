"""Small fast tools, a scripted reviewer and database checks for the runtime tests.

The tools are real implementations of the tool interface: the runtime (claims, leases, feedback, background
training) is under test, not the text classifier, so they vote from a keyword list and from a memory of the
humans' answers per text.
"""

from __future__ import annotations

import asyncio
import json
import multiprocessing as mp
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Engine, func, select

from policies import Policy, RulesSpec, TextClassifierSpec
from policies.model import Rule
from service.settings import Settings
from service.store import ReviewAnswer, SqlStore
from service.store.base import item_t, label_t, review_t
from service.store.db import read_tx
from tests.factories import make_policy
from tools.base import Batch, Item, ModelInfo, Tool, ToolContext, TrainingSet, Votes

SPAM_TEXTS = ("win a free prize now", "free entry to win cash", "claim your free ringtone")
HAM_TEXTS = ("see you at lunch", "call me when you are home", "the meeting moved to monday", "thanks for dinner")
TRUTH = {**dict.fromkeys(SPAM_TEXTS, "spam"), **dict.fromkeys(HAM_TEXTS, "ham")}


def runtime_policy(project: str = "demo", **overrides: object) -> Policy:
    """A policy that learns fast: small calibration set, frequent retrains."""
    fields: dict[str, object] = {"min_calibration": 10, "retrain_every": 10, "target_precision": 0.9,
                                 "audit_rate": 0.05}
    fields.update(overrides)
    return make_policy(project, **fields)


def stream_items(n: int, *, start: int = 0, prefix: str = "item") -> list[Item]:
    texts = (*SPAM_TEXTS, *HAM_TEXTS)
    return [Item(key=f"{prefix}-{i:06d}", text=texts[i % len(texts)], metadata={"i": i})
            for i in range(start, start + n)]


def truth_of(item: Item) -> str:
    return TRUTH[item.text or ""]


class KeywordVoter:
    """Votes spam with 0.85 when a keyword matches, abstains otherwise."""

    kind = "keywords"

    def __init__(self, name: str = "keywords", *, cost: float = 0.1, delay: float = 0.0,
                 blocking: bool = False) -> None:
        self.name, self.cost, self.delay, self.blocking = name, cost, delay, blocking

    async def predict(self, batch: Batch, context: ToolContext) -> Votes:
        if self.delay and self.blocking:
            time.sleep(self.delay)  # a long CPU-bound call: the event loop is stuck meanwhile
        elif self.delay:
            await asyncio.sleep(self.delay)
        n, labels = len(batch), context.labels
        probs = np.full((n, len(labels)), 1.0 / len(labels))
        hit = np.array(["free" in t or "win" in t for t in batch.texts], dtype=bool)
        spam = labels.index("spam")
        probs[hit] = 0.15 / max(len(labels) - 1, 1)
        probs[hit, spam] = 0.85
        return Votes(self.name, probs, ~hit, np.full(n, self.cost), ["keyword" if h else "no keyword" for h in hit])


class MemoryVoter:
    """Learns the humans' majority label per text; votes it with 0.97, abstains on unseen texts."""

    kind = "memory"

    def __init__(self, name: str = "memory", *, cost: float = 1.0) -> None:
        self.name, self.cost = name, cost
        self.fits = 0
        self._table: dict[str, str] = {}

    @property
    def version(self) -> str:
        return f"{self.name}-v{self.fits}"

    def fit(self, data: TrainingSet) -> ModelInfo:
        counts: dict[str, Counter[str]] = {}
        for item, y in zip(data.batch.items, data.y, strict=True):
            counts.setdefault(item.text or "", Counter())[data.labels[int(y)]] += 1
        self._table = {text: c.most_common(1)[0][0] for text, c in counts.items()}  # swapped in whole
        self.fits += 1
        return ModelInfo(self.name, self.version, len(data))

    def fork(self) -> MemoryVoter:
        return MemoryVoter(self.name, cost=self.cost)

    async def predict(self, batch: Batch, context: ToolContext) -> Votes:
        table, labels = self._table, context.labels
        n = len(batch)
        probs = np.full((n, len(labels)), 1.0 / len(labels))
        abstain = np.ones(n, dtype=bool)
        for i, text in enumerate(batch.texts):
            label = table.get(text)
            if label in labels:
                probs[i] = 0.03 / max(len(labels) - 1, 1)
                probs[i, labels.index(label)] = 0.97
                abstain[i] = False
        return Votes(self.name, probs, abstain, np.full(n, self.cost), ["memory"] * n)


def fast_tools(policy: Policy) -> Sequence[Tool]:
    return [KeywordVoter(), MemoryVoter()]


def slow_tools(policy: Policy) -> Sequence[Tool]:
    """Each batch takes half a second (long enough to stop a worker in the middle of one)."""
    return [KeywordVoter(delay=0.5), MemoryVoter()]


def blocking_tools(policy: Policy) -> Sequence[Tool]:
    """Each batch blocks the event loop for 2.5 seconds (longer than the short leases of the tests)."""
    return [KeywordVoter(delay=2.5, blocking=True), MemoryVoter()]


def stalling_tools(policy: Policy) -> Sequence[Tool]:
    """A keyword voter that never answers: the batch stays leased until the process dies."""
    return [KeywordVoter(delay=3600.0), MemoryVoter()]


# --- waiting and checking ------------------------------------------------------------------------------------


def wait_until(predicate: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll ``predicate`` until it holds; fail with ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(interval)


async def await_until(predicate: Callable[[], bool], *, timeout: float, what: str, interval: float = 0.05) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(interval)


def labels_per_item(store: SqlStore, project: str) -> dict[str, int]:
    """external id -> number of label rows, for every item of the project (0 when unlabeled)."""
    pid = store.projects.get_project(project).id
    with read_tx(store.engine) as conn:
        query = (select(item_t.c.external_id, func.count(label_t.c.id))
                 .select_from(item_t.outerjoin(label_t, label_t.c.item_id == item_t.c.id))
                 .where(item_t.c.project_id == pid).group_by(item_t.c.external_id))
        return {key: n for key, n in conn.execute(query)}


def labels_per_item_version(store: SqlStore, project: str) -> Counter[tuple[int, int]]:
    pid = store.projects.get_project(project).id
    with read_tx(store.engine) as conn:
        rows = conn.execute(select(label_t.c.item_id, label_t.c.policy_version).where(label_t.c.project_id == pid))
        return Counter((r[0], r[1]) for r in rows)


def reviews_per_task(store: SqlStore, project: str) -> Counter[int]:
    pid = store.projects.get_project(project).id
    with read_tx(store.engine) as conn:
        return Counter(conn.execute(select(review_t.c.task_id).where(review_t.c.project_id == pid)).scalars())


def all_labeled(store: SqlStore, project: str, n: int) -> Callable[[], bool]:
    return lambda: store.items.count_items(project)["labeled"] >= n


# --- a scripted reviewer ---------------------------------------------------------------------------------------


@dataclass
class Claim:
    task_id: int
    reviewer: str
    claimed: float
    submitted: float | None = None


@dataclass
class Reviewer:
    """Claims one task at a time and answers it truthfully, until ``stop`` is set."""

    store: SqlStore
    project: str
    name: str
    stop: threading.Event
    truth: Callable[[Item], str] = truth_of
    claims: list[Claim] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)

    def run(self) -> None:
        idle = 0.01
        try:
            while not self.stop.is_set():
                task = self.store.reviews.claim_review(self.project, reviewer=self.name)
                if task is None:  # an empty queue: back off, as a person would
                    self.stop.wait(idle)
                    idle = min(idle * 2, 0.25)
                    continue
                idle = 0.01
                claim = Claim(task.task_id, self.name, time.monotonic())
                self.claims.append(claim)
                self.store.reviews.submit_reviews([ReviewAnswer(task.task_id, task.token, self.truth(task.item))],
                                          project=self.project)
                claim.submitted = time.monotonic()
        except BaseException as exc:  # reported by the test
            self.errors.append(exc)

    def start(self) -> threading.Thread:
        thread = threading.Thread(target=self.run, name=f"reviewer-{self.name}", daemon=True)
        thread.start()
        return thread


# --- worker processes ----------------------------------------------------------------------------------------

TOOLS = {"fast": fast_tools, "slow": slow_tools, "stalling": stalling_tools}


def worker_process(url: str, name: str, settings: dict[str, object], tools: str, batch_size: int,
                   results: Any = None) -> None:
    """Target of a worker process: ``labelagent worker``'s code (signals included) with the test tools.
    Puts ``(name, items processed)`` on ``results`` (a multiprocessing queue) when it stops."""
    from service.serve import run_worker, setup_logging

    setup_logging("WARNING")
    report = (lambda stats: results.put((name, stats.items))) if results is not None else None
    run_worker(Settings(database_url=url, **settings), name=name, tools_factory=TOOLS[tools],  # type: ignore[arg-type]
               batch_size=batch_size, report=report)


def engine_url(engine: Engine) -> str:
    return engine.url.render_as_string(hide_password=False)


FAST = {"worker_poll_seconds": 0.1, "feedback_poll_seconds": 0.1, "refresh_seconds": 0.2,
        "feedback_lag_seconds": 5.0, "stop_grace_seconds": 10.0}
# A fresh process per worker, forked from a server that imported the heavy modules (LangGraph, SciPy) once:
# four interpreters importing them at once on a small machine cost ~15 s before the first batch.
SPAWN = mp.get_context("forkserver")
SPAWN.set_forkserver_preload(["service.serve", "tests.service.runtime.helpers"])


def stop_processes(procs: list[mp.process.BaseProcess]) -> None:
    """SIGTERM each live process, then wait; kill what has not stopped after 30 s."""
    for proc in procs:
        if proc.is_alive() and proc.pid is not None:
            os.kill(proc.pid, signal.SIGTERM)
    for proc in procs:
        proc.join(30)
        if proc.is_alive():
            proc.kill()
            proc.join(5)


# --- the broker sources' end-to-end test (Redis, NATS, RabbitMQ) -----------------------------------------------

ROOT = Path(__file__).resolve().parents[3]
SOURCE_WORKER_ENV = {"LABELAGENT_WORKER_POLL_SECONDS": "0.1", "LABELAGENT_FEEDBACK_POLL_SECONDS": "0.1",
                     "LABELAGENT_REFRESH_SECONDS": "0.2", "LABELAGENT_FEEDBACK_LAG_SECONDS": "5"}


def broker_policy() -> Policy:
    """Keyword rules and a small learned classifier: a policy that auto-labels a broker's stream soon."""
    return runtime_policy(tools=[RulesSpec(name="rules", rules=[Rule(label="spam", keywords=["free", "win"])]),
                                 TextClassifierSpec(name="clf", min_examples=4, n_features=2**12)])


def run_source_worker(store: SqlStore, project: str, source: str, n: int, *, drained: Callable[[], bool],
                      drained_what: str) -> None:
    """``labelagent worker --source SOURCE`` as a process, with 4 reviewers answering meanwhile, until the ``n``
    items are stored and labeled and ``drained()`` (the broker holds nothing for the worker); then SIGTERM.
    Asserts the worker stopped cleanly, the reviewers met no error, and every item is stored and labeled once."""
    env = {**os.environ, "LABELAGENT_DATABASE_URL": engine_url(store.engine), **SOURCE_WORKER_ENV}
    worker = subprocess.Popen([sys.executable, "-m", "service.cli", "worker", "--source", source, "--name", "w1",
                               "--log-level", "WARNING"], env=env, cwd=ROOT)
    stop = threading.Event()
    reviewers = [Reviewer(store, project, f"r{i}", stop) for i in range(4)]
    threads = [r.start() for r in reviewers]
    try:
        wait_until(lambda: sum(store.items.count_items(project).values()) == n, timeout=60, what=f"{n} items stored")
        wait_until(all_labeled(store, project, n), timeout=60, what=f"{n} items labeled")
        wait_until(drained, timeout=30, what=drained_what)
    finally:
        stop.set()
        for t in threads:
            t.join(10)
        worker.send_signal(signal.SIGTERM)
        try:
            worker.wait(30)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait(5)
    assert worker.returncode == 0, "SIGTERM stops the worker cleanly"
    assert not [e for r in reviewers for e in r.errors]
    per_item = labels_per_item(store, project)
    assert len(per_item) == n and set(per_item.values()) == {1}, "every item stored once and labeled once"


def message_body(project: str, item: Item, **extra: Any) -> bytes:
    """A broker message's body (NATS, RabbitMQ): the item as one JSON object."""
    return json.dumps({"project": project, "external_id": item.key,
                       "data": {"text": item.text, "metadata": item.metadata}, **extra}).encode()


def mixed_messages(project: str, items: Sequence[Item]) -> list[bytes]:
    """``items``, then a replay of ``items[3]`` and four messages to dead-letter, keyed ``bad-json`` (its data is
    not JSON), ``raw`` (the body is not JSON), ``lost`` (an unknown project) and ``bad-label`` (label ``maybe``)."""
    return [message_body(project, it) for it in items] + [
        message_body(project, items[3]),  # a replayed message
        json.dumps({"project": project, "external_id": "bad-json", "data": "{oops"}).encode(),
        b"not json at all \xff",
        message_body("no-such-project", Item(key="lost", text="x")),
        message_body(project, Item(key="bad-label", text="x"), label="maybe")]
