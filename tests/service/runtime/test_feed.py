"""AnswerFeed: every human answer reaches the learner once, also when answers commit out of id order."""

from __future__ import annotations

from sqlalchemy import insert, select

from service.runtime.feedback import AnswerFeed, FeedbackSink, NullSink
from service.store import ReviewAnswer, SqlStore
from service.store.base import item_t, label_t
from service.store.db import read_tx, write_tx
from service.store.tables import utcnow
from tests.factories import make_items, make_policy


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _human_label(store: SqlStore, project: str, key: str, label: str, label_id: int) -> None:
    """Insert a human label with a chosen id (as a transaction that took its id earlier would commit it)."""
    pid = store.projects.get_project(project).id
    with write_tx(store.engine) as conn:
        item_id = conn.execute(select(item_t.c.id).where(item_t.c.external_id == key)).scalar_one()
        conn.execute(insert(label_t).values(id=label_id, project_id=pid, item_id=item_id, policy_version=1,
                                            label=label, confidence=1.0, source="human", cost=0.0, reason="test",
                                            created_at=utcnow()))


def test_feed_delivers_late_commits_once(store: SqlStore) -> None:
    policy = make_policy()
    store.projects.create_project(policy.project, policy)
    project = policy.project
    store.items.ingest(project, make_items(6))
    clock = Clock()
    feed = AnswerFeed(store, project, lag_seconds=30, clock=clock)
    assert feed.start() == []
    _human_label(store, project, "item-000000", "ham", 100)
    assert [a.item.key for a in feed.poll()] == ["item-000000"]
    assert feed.poll() == []
    clock.now += 10
    _human_label(store, project, "item-000001", "spam", 50)  # took its id before 100, committed after
    got = feed.poll()
    assert [(a.item.key, a.label) for a in got] == [("item-000001", "spam")]
    clock.now += 31  # the poll that saw id 100 is older than the lag now: the floor moves up to 100
    assert feed.poll() == []
    assert feed.floor == 100
    _human_label(store, project, "item-000002", "ham", 101)
    assert [a.item.key for a in feed.poll()] == ["item-000002"]
    assert feed.delivered == 3


def test_feed_start_returns_latest_answer_per_item_and_skips_agent_labels(store: SqlStore) -> None:
    policy = make_policy()
    store.projects.create_project(policy.project, policy)
    project = policy.project
    store.items.ingest(project, make_items(4))
    token, items = store.items.claim_batch(project, worker="w", size=4)
    from tests.factories import make_batch_result

    store.items.record_batch(project, make_batch_result(policy, items, ["accept", "escalate", "escalate", "audit"]),
                             token)
    tasks = store.reviews.claim_reviews(project, reviewer="r", limit=10)
    store.reviews.submit_reviews([ReviewAnswer(t.task_id, t.token, "spam") for t in tasks[:2]], project=project)
    feed = AnswerFeed(store, project, lag_seconds=30)
    loaded = feed.start()
    assert sorted(a.item.key for a in loaded) == sorted(t.item.key for t in tasks[:2])
    assert all(a.label == "spam" for a in loaded)
    assert feed.poll() == []
    store.reviews.submit_reviews([ReviewAnswer(tasks[2].task_id, tasks[2].token, "ham")], project=project)
    assert [(a.item.key, a.label) for a in feed.poll()] == [(tasks[2].item.key, "ham")]
    with read_tx(store.engine) as conn:
        assert conn.execute(select(label_t.c.id).where(label_t.c.source == "human")).all()


def test_sinks() -> None:
    assert isinstance(NullSink(), FeedbackSink)
    NullSink().notify("anything")
