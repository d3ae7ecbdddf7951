"""The review queue: claims by priority, leases with tokens, answers as ground truth, overlap."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, select

from agent.ports import BatchResult
from policies import ConflictError, InputError, NotFoundError, Policy
from service.store import ReviewAnswer, SqlStore
from service.store.base import calib_t, label_t, review_t
from service.store.db import read_tx
from tests.factories import make_decision, make_items, make_policy

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def queue(store: SqlStore, project: str, policy: Policy, specs: list[tuple[str, float]], start: int = 0) -> list[str]:
    """Ingest one item per (action, priority) and record it as escalated/audited. Returns the keys."""
    items = make_items(len(specs), start=start)
    store.items.ingest(project, items)
    token, claimed = store.items.claim_batch(project, worker="agent", size=len(specs))
    by_key = {it.key: spec for it, spec in zip(items, specs, strict=True)}
    decisions = [make_decision(it.key, by_key[it.key][0], label="spam", confidence=0.6 + i / 100,
                               priority=by_key[it.key][1]) for i, it in enumerate(claimed)]
    store.items.record_batch(project, BatchResult(policy.key, 0.9, {}, decisions), token)
    return [it.key for it in items]


def table_count(store: SqlStore, table) -> int:
    with read_tx(store.engine) as conn:
        return conn.execute(select(func.count()).select_from(table)).scalar_one()


def test_claims_follow_priority_then_age(store: SqlStore, project: str, policy: Policy) -> None:
    keys = queue(store, project, policy, [("escalate", 1.0), ("audit", 5.0), ("escalate", 5.0), ("escalate", 0.0)])
    order = []
    while (task := store.reviews.claim_review(project, reviewer="r")) is not None:
        order.append(task.item.key)
    assert order == [keys[1], keys[2], keys[0], keys[3]]


def test_claimed_task_carries_the_decision_time_view(store: SqlStore, project: str, policy: Policy) -> None:
    keys = queue(store, project, policy, [("audit", 2.0)])
    task = store.reviews.claim_review(project, reviewer="alice", lease_seconds=60, now=T0)
    assert task is not None
    assert (task.item.key, task.kind, task.suggestion, task.reviewer) == (keys[0], "audit", "spam", "alice")
    assert task.confidence == pytest.approx(0.6)
    assert task.lease_expires_at == T0 + timedelta(seconds=60)
    assert store.reviews.claim_review(project, reviewer="bob", now=T0) is None  # held by alice


def test_submit_makes_ground_truth_label_and_calibration(store: SqlStore, project: str, policy: Policy) -> None:
    keys = queue(store, project, policy, [("escalate", 1.0)])
    task = store.reviews.claim_review(project, reviewer="alice")
    truth = store.reviews.submit_review(task.task_id, task.token, "ham", project=project)
    assert (truth.item.key, truth.label, truth.reviewer) == (keys[0], "ham", "alice")
    assert store.items.item_view(project, keys[0]).item.status == "labeled"
    label = store.learning.load_labels(project)[keys[0]][0]
    assert (label.label, label.source, label.confidence) == ("ham", "human", 1.0)
    [record] = store.learning.load_calibration(project, 10)
    assert (record.key, record.predicted, record.truth, record.kind, record.correct) == (
        keys[0], "spam", "ham", "escalation", False)
    assert record.confidence == pytest.approx(0.6)
    assert store.reviews.count_tasks(project) == {"open": 0, "claimed": 0, "done": 1}


def test_stale_token_after_expiry_and_reclaim_is_a_conflict(store: SqlStore, project: str, policy: Policy) -> None:
    queue(store, project, policy, [("escalate", 1.0)])
    slow = store.reviews.claim_review(project, reviewer="slow", lease_seconds=30, now=T0)
    fast = store.reviews.claim_review(project, reviewer="fast", now=T0 + timedelta(seconds=31))
    assert fast is not None and fast.task_id == slow.task_id and fast.token != slow.token
    with pytest.raises(ConflictError, match="stale"):
        store.reviews.submit_review(slow.task_id, slow.token, "ham")
    assert table_count(store, review_t) == 0
    store.reviews.submit_review(fast.task_id, fast.token, "spam")
    with pytest.raises(ConflictError, match="stale"):  # done: the same token cannot answer twice
        store.reviews.submit_review(fast.task_id, fast.token, "spam")
    assert table_count(store, review_t) == 1


def test_expired_but_unclaimed_lease_still_counts(store: SqlStore, project: str, policy: Policy) -> None:
    queue(store, project, policy, [("escalate", 1.0)])
    task = store.reviews.claim_review(project, reviewer="r", lease_seconds=1, now=T0)
    store.reviews.submit_review(task.task_id, task.token, "ham", now=T0 + timedelta(hours=1))
    assert store.reviews.count_tasks(project)["done"] == 1


def test_foreign_token_unknown_task_and_bad_label(store: SqlStore, project: str, policy: Policy) -> None:
    queue(store, project, policy, [("escalate", 1.0)])
    task = store.reviews.claim_review(project, reviewer="r")
    with pytest.raises(ConflictError):
        store.reviews.submit_review(task.task_id, "someone-elses-token", "ham")
    with pytest.raises(NotFoundError):
        store.reviews.submit_review(task.task_id + 999, task.token, "ham")
    with pytest.raises(InputError, match="eggs"):
        store.reviews.submit_review(task.task_id, task.token, "eggs")
    store.projects.create_project("other", make_policy("other"))
    with pytest.raises(NotFoundError):  # a task of another project is invisible
        store.reviews.submit_review(task.task_id, task.token, "ham", project="other")
    assert table_count(store, review_t) == 0
    assert store.reviews.count_tasks(project)["claimed"] == 1


def test_extend_review_lease(store: SqlStore, project: str, policy: Policy) -> None:
    queue(store, project, policy, [("escalate", 1.0)])
    task = store.reviews.claim_review(project, reviewer="r", lease_seconds=10, now=T0)
    assert store.reviews.extend_review_lease(task.task_id, task.token, lease_seconds=100,
                                             now=T0 + timedelta(seconds=5)) == (
        T0 + timedelta(seconds=105))
    assert store.reviews.claim_review(project, reviewer="x", now=T0 + timedelta(seconds=50)) is None
    with pytest.raises(ConflictError):
        store.reviews.extend_review_lease(task.task_id, "wrong")


def test_overlap_needs_distinct_reviewers(store: SqlStore, policy: Policy) -> None:
    store.projects.create_project("dup", make_policy("dup", overlap=2, max_overlap=2))
    dup = store.projects.active_policy("dup")
    keys = queue(store, "dup", dup, [("escalate", 1.0)])
    first = store.reviews.claim_review("dup", reviewer="alice")
    result = store.reviews.submit_reviews([ReviewAnswer(first.task_id, first.token, "ham")])
    assert len(result.answers) == 1 and result.settled == []
    assert store.reviews.claim_review("dup", reviewer="alice") is None  # alice answered already
    second = store.reviews.claim_review("dup", reviewer="bob")
    assert second is not None and second.answers == 1
    result = store.reviews.submit_reviews([ReviewAnswer(second.task_id, second.token, "ham")])
    assert [(g.item.key, g.label) for g in result.settled] == [(keys[0], "ham")]
    assert result.settled[0].reviewer == "alice,bob"
    assert store.learning.load_labels("dup")[keys[0]][0].confidence == 1.0


def test_disagreement_asks_one_more_reviewer(store: SqlStore) -> None:
    store.projects.create_project("split", make_policy("split", overlap=2, max_overlap=3))
    split = store.projects.active_policy("split")
    keys = queue(store, "split", split, [("escalate", 1.0)])
    for reviewer, label in (("a", "ham"), ("b", "spam")):
        task = store.reviews.claim_review("split", reviewer=reviewer)
        assert store.reviews.submit_reviews([ReviewAnswer(task.task_id, task.token, label)]).settled == []
    third = store.reviews.claim_review("split", reviewer="c")
    assert third is not None and third.answers_needed == 3
    settled = store.reviews.submit_reviews([ReviewAnswer(third.task_id, third.token, "spam")]).settled
    assert [(g.item.key, g.label) for g in settled] == [(keys[0], "spam")]
    assert store.learning.load_labels("split")[keys[0]][0].confidence == pytest.approx(2 / 3)


def test_bulk_submit_is_all_or_nothing(store: SqlStore, project: str, policy: Policy) -> None:
    queue(store, project, policy, [("escalate", float(i)) for i in range(5)])
    tasks = store.reviews.claim_reviews(project, reviewer="oracle", limit=10)
    assert len(tasks) == 5 and len({t.token for t in tasks}) == 1
    answers = [ReviewAnswer(t.task_id, t.token, "ham") for t in tasks]
    with pytest.raises(InputError):
        store.reviews.submit_reviews([*answers[:4], ReviewAnswer(tasks[4].task_id, tasks[4].token, "eggs")])
    with pytest.raises(InputError, match="twice"):
        store.reviews.submit_reviews([answers[0], answers[0]])
    assert (table_count(store, review_t), table_count(store, label_t)) == (0, 0)
    result = store.reviews.submit_reviews(answers)
    assert len(result.settled) == 5
    assert (table_count(store, review_t), table_count(store, label_t), table_count(store, calib_t)) == (5, 5, 5)
    assert store.items.count_items(project)["labeled"] == 5


def test_concurrent_review_claims_never_share_a_task(store: SqlStore, project: str, policy: Policy) -> None:
    queue(store, project, policy, [("escalate", float(i % 3)) for i in range(60)])
    got: dict[str, list[int]] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(4)

    def reviewer(name: str) -> None:
        try:
            barrier.wait()
            mine = []
            while tasks := store.reviews.claim_reviews(project, reviewer=name, limit=4):
                mine.extend(t.task_id for t in tasks)
            got[name] = mine
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reviewer, args=(f"r{i}",)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    claimed = [task_id for ids in got.values() for task_id in ids]
    assert len(claimed) == 60 and len(set(claimed)) == 60
