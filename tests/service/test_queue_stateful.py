"""A Hypothesis state machine over the worker leases and the review queue (SQLite), checked against a model.

Rules: ingest, worker claim, heartbeat, batch record (some items escalated), clock advance (leases expire), crash
(a worker forgets its lease token), reviewer claim, submit (valid, and stale tokens), policy change. Invariants:
every item is in exactly one state, the one the model predicts; at most one label per item and policy version;
no task answered by more reviewers than it needs, nor needing more than the policy's ``max_overlap``.
"""

from __future__ import annotations

import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule
from sqlalchemy import func, select

from policies import ConflictError
from service.settings import Settings
from service.store import ReviewAnswer, SqlStore
from service.store.base import item_t, label_t, review_t, task_t
from service.store.db import create_all, make_engine, read_tx
from tests.factories import make_batch_result, make_policy
from tools.base import Item

PROJECT = "demo"
LEASE = 30.0
REVIEW_LEASE = 60.0
MAX_ATTEMPTS = 3
WORKERS = ("w1", "w2")
REVIEWERS = ("ann", "bob", "cid")


@dataclass
class ModelItem:
    seq: int
    status: str = "pending"
    attempts: int = 0
    token: str | None = None
    expires: datetime | None = None


@dataclass
class ModelTask:
    needed: int
    max_overlap: int
    answers: list[tuple[str, str]] = field(default_factory=list)  # (reviewer, label)
    token: str | None = None
    expires: datetime | None = None
    reviewer: str | None = None
    done: bool = False


class QueueMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.dir = Path(tempfile.mkdtemp(prefix="queue-sm-"))
        self.engine = make_engine(f"sqlite:///{self.dir / 'q.db'}")
        create_all(self.engine)
        self.store = SqlStore(self.engine, Settings(lease_seconds=LEASE, review_lease_seconds=REVIEW_LEASE,
                                                    max_attempts=MAX_ATTEMPTS))
        self.now = datetime(2026, 1, 1, tzinfo=UTC)
        self.items: dict[str, ModelItem] = {}
        self.tasks: dict[str, ModelTask] = {}  # by item key (one task per item: labels are written once)
        self.task_ids: dict[int, str] = {}
        self.leases: dict[str, list[str]] = {}  # worker token -> keys it claimed (what the worker remembers)
        self.claims: list[tuple[int, str, str]] = []  # reviewer claims remembered: (task id, token, reviewer)
        self.stale: list[tuple[int, str]] = []  # tokens of claims that were answered or superseded
        self.policy = make_policy(PROJECT, overlap=2, max_overlap=3)
        self.version = 1

    def teardown(self) -> None:
        self.engine.dispose()
        shutil.rmtree(self.dir, ignore_errors=True)

    @initialize()
    def create(self) -> None:
        self.store.projects.create_project(PROJECT, self.policy)

    # --- the worker side ---------------------------------------------------------------------------------

    @rule(n=st.integers(1, 6))
    def ingest(self, n: int) -> None:
        start = len(self.items)
        keys = [f"it-{i:04d}" for i in range(start, start + n)]
        result = self.store.items.ingest(PROJECT, [Item(key=k, text=f"text {k}") for k in keys], now=self.now)
        assert result.inserted == n
        for k in keys:
            self.items[k] = ModelItem(seq=len(self.items) + 1)

    def _expired(self, m: ModelItem) -> bool:
        return m.status == "leased" and m.expires is not None and m.expires <= self.now

    @rule(worker=st.sampled_from(WORKERS), size=st.integers(1, 5))
    def claim(self, worker: str, size: int) -> None:
        for m in self.items.values():
            if self._expired(m) and m.attempts >= MAX_ATTEMPTS:
                m.status, m.token, m.expires = "failed", None, None
        claimable = sorted((m.seq, k) for k, m in self.items.items() if m.status == "pending" or self._expired(m))
        expected = [k for _, k in claimable[:size]]
        token, items = self.store.items.claim_batch(PROJECT, worker=worker, size=size, lease_seconds=LEASE,
                                                    now=self.now)
        assert [it.key for it in items] == expected
        for k in expected:
            m = self.items[k]
            m.status, m.token, m.expires, m.attempts = "leased", token, self.now + timedelta(seconds=LEASE), \
                m.attempts + 1
        if expected:
            self.leases[token] = expected

    @precondition(lambda self: self.leases)
    @rule(data=st.data())
    def heartbeat(self, data: st.DataObject) -> None:
        token = data.draw(st.sampled_from(list(self.leases)))
        live = [m for m in self.items.values() if m.token == token and m.status == "leased" and m.expires
                and m.expires > self.now]
        assert self.store.items.extend_lease(PROJECT, token, lease_seconds=LEASE, now=self.now) == len(live)
        for m in live:
            m.expires = self.now + timedelta(seconds=LEASE)

    @precondition(lambda self: self.leases)
    @rule(data=st.data())
    def record(self, data: st.DataObject) -> None:
        token = data.draw(st.sampled_from(list(self.leases)))
        keys = self.leases.pop(token)
        actions = data.draw(st.lists(st.sampled_from(["accept", "escalate", "audit"]), min_size=len(keys),
                                     max_size=len(keys)))
        policy = self.store.projects.active_policy(PROJECT)
        result = make_batch_result(policy, [Item(key=k, text=f"text {k}") for k in keys], actions, n_tools=2)
        writable = {k for k in keys if self.items[k].token == token and self.items[k].status == "leased"
                    and self.items[k].expires is not None and self.items[k].expires > self.now}
        rec = self.store.items.record_batch(PROJECT, result, token, now=self.now)
        assert set(rec.fenced) == set(keys) - writable
        for k, action in zip(keys, actions, strict=True):
            if k not in writable:
                continue
            m = self.items[k]
            m.token, m.expires = None, None
            if action == "accept":
                m.status = "labeled"
            else:
                m.status = "in_review"
                self.tasks[k] = ModelTask(needed=policy.overlap, max_overlap=policy.max_overlap)

    @precondition(lambda self: self.leases)
    @rule(data=st.data())
    def crash(self, data: st.DataObject) -> None:
        """A worker dies: its lease token is gone, its items come back when the lease expires."""
        del self.leases[data.draw(st.sampled_from(list(self.leases)))]

    @rule(seconds=st.sampled_from([1.0, LEASE / 2, LEASE + 1, REVIEW_LEASE + 1]))
    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    @rule(overlap=st.integers(1, 3))
    def policy_change(self, overlap: int) -> None:
        self.version = self.store.projects.next_policy_version(PROJECT)
        policy = make_policy(PROJECT, version=self.version, overlap=overlap, max_overlap=3)
        self.store.projects.add_policy_version(PROJECT, policy, activate=True)
        assert self.store.projects.active_policy(PROJECT).version == self.version

    # --- the reviewer side -------------------------------------------------------------------------------

    def _claimable(self, t: ModelTask, reviewer: str) -> bool:
        free = t.token is None or (t.expires is not None and t.expires <= self.now)
        return not t.done and free and reviewer not in {r for r, _ in t.answers}

    @rule(reviewer=st.sampled_from(REVIEWERS))
    def review_claim(self, reviewer: str) -> None:
        claimed = self.store.reviews.claim_review(PROJECT, reviewer=reviewer, lease_seconds=REVIEW_LEASE, now=self.now)
        candidates = {k for k, t in self.tasks.items() if self._claimable(t, reviewer)}
        if claimed is None:
            assert not candidates, f"{reviewer} got nothing but could claim {sorted(candidates)}"
            return
        key = claimed.item.key
        assert key in candidates
        self.task_ids[claimed.task_id] = key
        t = self.tasks[key]
        if t.token is not None:
            self.stale.append((claimed.task_id, t.token))  # the expired claim is superseded
        t.token, t.reviewer, t.expires = claimed.token, reviewer, self.now + timedelta(seconds=REVIEW_LEASE)
        self.claims.append((claimed.task_id, claimed.token, reviewer))

    @precondition(lambda self: self.claims)
    @rule(data=st.data(), label=st.sampled_from(["ham", "spam"]))
    def submit(self, data: st.DataObject, label: str) -> None:
        task_id, token, reviewer = data.draw(st.sampled_from(self.claims))
        self.claims.remove((task_id, token, reviewer))
        key = self.task_ids[task_id]
        t = self.tasks[key]
        if t.token != token:  # superseded by another reviewer's claim
            with pytest.raises(ConflictError):
                self.store.reviews.submit_reviews([ReviewAnswer(task_id, token, label)], project=PROJECT, now=self.now)
            return
        self.store.reviews.submit_reviews([ReviewAnswer(task_id, token, label)], project=PROJECT, now=self.now)
        self.stale.append((task_id, token))
        t.answers.append((reviewer, label))
        t.token, t.reviewer, t.expires = None, None, None
        if len(t.answers) >= t.needed:
            counts = Counter(lab for _, lab in t.answers)
            if max(counts.values()) < len(t.answers) and t.needed < t.max_overlap:
                t.needed += 1
            else:
                t.done = True
                self.items[key].status = "labeled"

    @precondition(lambda self: self.stale)
    @rule(data=st.data())
    def submit_stale(self, data: st.DataObject) -> None:
        task_id, token = data.draw(st.sampled_from(self.stale))
        if self.tasks[self.task_ids[task_id]].token == token:
            return  # still current (cannot happen: tokens are fresh per claim), nothing to check
        with pytest.raises(ConflictError):
            self.store.reviews.submit_reviews([ReviewAnswer(task_id, token, "ham")], project=PROJECT, now=self.now)

    # --- invariants -------------------------------------------------------------------------------------

    @invariant()
    def items_match_the_model(self) -> None:
        with read_tx(self.engine) as conn:
            rows = conn.execute(select(item_t.c.external_id, item_t.c.status, item_t.c.attempts)).all()
        assert len(rows) == len(self.items), "every item is stored once"
        actual = {k: (s, a) for k, s, a in rows}
        expected = {k: (m.status, m.attempts) for k, m in self.items.items()}
        assert actual == expected
        counts = self.store.items.count_items(PROJECT)
        assert sum(counts.values()) == len(self.items), "every item in exactly one state"

    @invariant()
    def one_label_per_item_and_version(self) -> None:
        with read_tx(self.engine) as conn:
            dup = conn.execute(select(label_t.c.item_id, label_t.c.policy_version, func.count())
                               .group_by(label_t.c.item_id, label_t.c.policy_version)
                               .having(func.count() > 1)).all()
            labeled = set(conn.execute(select(item_t.c.external_id).join(label_t, label_t.c.item_id == item_t.c.id))
                          .scalars())
        assert dup == []
        assert labeled == {k for k, m in self.items.items() if m.status == "labeled"}

    @invariant()
    def no_task_over_its_overlap(self) -> None:
        with read_tx(self.engine) as conn:
            tasks = conn.execute(select(task_t.c.id, task_t.c.answers_needed, task_t.c.answers, task_t.c.status))\
                .all()
            per_task = Counter(conn.execute(select(review_t.c.task_id)).scalars())
            per_pair = Counter(conn.execute(select(review_t.c.task_id, review_t.c.reviewer)).all())
        assert all(n == 1 for n in per_pair.values()), "a reviewer answered a task twice"
        assert len(tasks) == len(self.tasks), "one task per escalated item"
        for task_id, needed, answers, status in tasks:
            assert per_task[task_id] == answers <= needed <= 3
            assert (status == "done") == (answers == needed)
            if task_id in self.task_ids:
                model = self.tasks[self.task_ids[task_id]]
                assert (needed, answers, status == "done") == (model.needed, len(model.answers), model.done)


QueueMachine.TestCase.settings = settings(max_examples=30, stateful_step_count=30, deadline=None,
                                          suppress_health_check=[HealthCheck.too_slow])
TestQueue = QueueMachine.TestCase
