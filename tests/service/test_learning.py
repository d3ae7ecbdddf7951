"""What the learner reads back: ground truth, calibration windows, model versions; metrics counts."""

from __future__ import annotations

from agent.ports import BatchResult
from policies import Policy
from service.store import ReviewAnswer, SqlStore
from tests.factories import make_decision, make_items, make_policy, make_votes
from tools.base import ModelInfo


def review_all(store: SqlStore, project: str, policy: Policy, n: int, *, kinds: list[str], truth: str = "ham",
               start: int = 0) -> list[str]:
    """n items, escalated/audited with the given kinds, all answered with ``truth`` in arrival order."""
    items = make_items(n, start=start)
    store.items.ingest(project, items)
    token, claimed = store.items.claim_batch(project, worker="agent", size=n)
    decisions = [make_decision(it.key, "audit" if kind == "audit" else "escalate", label="spam" if i % 2 else "ham",
                               confidence=0.5 + i / 100, review_kind=kind)
                 for i, (it, kind) in enumerate(zip(claimed, kinds, strict=True))]
    store.items.record_batch(project, BatchResult(policy.key, None, {}, decisions), token)
    tasks = sorted(store.reviews.claim_reviews(project, reviewer="oracle", limit=n), key=lambda t: t.item.key)
    store.reviews.submit_reviews([ReviewAnswer(t.task_id, t.token, truth) for t in tasks])
    return [it.key for it in items]


def test_ground_truth_round_trip(store: SqlStore, project: str, policy: Policy) -> None:
    keys = review_all(store, project, policy, 4, kinds=["escalation"] * 4)
    truth = store.learning.load_ground_truth(project)
    assert [g.item.key for g in truth] == keys  # oldest first
    assert {g.label for g in truth} == {"ham"}
    assert truth[0].item.metadata == {"i": 0, "source": "test"}
    assert [g.item.key for g in store.learning.load_ground_truth(project, limit=2)] == keys[2:]  # the most recent two


def test_agent_labels_are_not_ground_truth(store: SqlStore, project: str, policy: Policy) -> None:
    store.items.ingest(project, make_items(2))
    token, items = store.items.claim_batch(project, worker="w", size=2)
    store.items.record_batch(project, BatchResult(policy.key, 0.9, {}, [make_decision(i.key) for i in items]), token)
    assert store.learning.load_ground_truth(project) == []


def test_calibration_window_and_kinds(store: SqlStore, project: str, policy: Policy) -> None:
    kinds = ["cold_start", "escalation", "audit", "audit", "escalation", "cold_start"]
    keys = review_all(store, project, policy, 6, kinds=kinds)
    records = store.learning.load_calibration(project, 100)
    assert [r.key for r in records] == keys
    assert [r.seq for r in records] == sorted(r.seq for r in records)
    assert [r.kind for r in records] == kinds
    assert [r.correct for r in records] == [True, False] * 3  # suggestions alternate ham/spam; truth is ham
    recent = store.learning.load_calibration(project, 3)
    assert [r.key for r in recent] == keys[3:]
    out_of_sample = store.learning.load_calibration(project, 10, kinds=("cold_start", "audit"))
    assert [r.key for r in out_of_sample] == [keys[0], keys[2], keys[3], keys[5]]


def test_model_versions_are_saved_once(store: SqlStore, project: str, policy: Policy) -> None:
    info = ModelInfo(tool="clf", version="clf-3", trained_on=120, metrics={"accuracy": 0.91})
    store.learning.save_model_version(project, policy.key, info)
    store.learning.save_model_version(project, policy.key, info)  # idempotent
    store.learning.save_model_version(project, policy.key, ModelInfo(tool="knn", version="knn-1", trained_on=120))
    saved = store.learning.list_model_versions(project)
    assert [(m.tool, m.version, m.trained_on) for m in saved] == [("clf", "clf-3", 120), ("knn", "knn-1", 120)]
    assert saved[0].metrics == {"accuracy": 0.91}
    assert saved[0].policy_key == "demo/1"
    assert [m.version for m in store.learning.list_model_versions(project, tool="knn")] == ["knn-1"]


def test_stats_count_everything_per_project(store: SqlStore, project: str, policy: Policy) -> None:
    review_all(store, project, policy, 2, kinds=["escalation", "audit"])
    store.items.ingest(project, make_items(3, start=10))
    token, items = store.items.claim_batch(project, worker="w", size=1)
    store.items.record_batch(project, BatchResult(policy.key, 0.9, {}, [make_decision(items[0].key)]), token)
    store.items.claim_batch(project, worker="w", size=1)
    store.projects.create_project("quiet", make_policy("quiet"))
    assert store.stats(project) == {
        "items": {"pending": 1, "leased": 1, "labeled": 3, "in_review": 0, "failed": 0},
        "tasks": {"open": 0, "claimed": 0, "done": 2},
        "labels": {"agent": 1, "human": 2},
    }
    assert sum(store.stats("quiet")["items"].values()) == 0


def test_the_votes_training_rows_come_from_the_models_that_cast_them(store: SqlStore, project: str,
                                                                     policy: Policy) -> None:
    """A restarted learner weighs the pool's rows by how many labels the deciding models had: read back from the
    model version stored with each vote (0 where no voting model had been fitted: an import's first items)."""
    items = make_items(3)
    store.items.ingest(project, items)
    store.learning.save_model_version(project, policy.key, ModelInfo(tool="clf", version="clf-v2", trained_on=120))
    store.learning.save_model_version(project, policy.key, ModelInfo(tool="knn", version="knn-v2", trained_on=150))
    for item, versions in zip(items[:2], [{}, {"clf": "clf-v2", "knn": "knn-v2"}], strict=True):
        token, claimed = store.items.claim_batch(project, worker="agent", size=1)
        assert [it.key for it in claimed] == [item.key]
        votes = make_votes(policy.labels, tools=("rules", "clf", "knn"))
        decision = make_decision(item.key, "escalate", votes=votes, review_kind="cold_start")
        store.items.record_batch(project, BatchResult(policy.key, None, versions, [decision]), token)
    keys = [it.key for it in items]
    assert store.learning.load_vote_training(project, keys, policy_key=policy.key, policy_version=policy.version) == {
        keys[0]: 0, keys[1]: 150}  # the third item has no votes yet
    assert store.learning.load_vote_training(project, keys, policy_key=policy.key,
                                             policy_version=policy.version + 1) == {}
