"""Store additions for the API: rollback follows the audit log (also around changes made without it), skips expire,
ground truth comes in arrival order."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from policies import ConflictError, NotFoundError, Policy
from service.store import SqlStore
from tests.factories import make_batch_result, make_items, make_policy

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def test_rollback_pops_activations(store: SqlStore) -> None:
    store.projects.create_project("p", make_policy("p"), actor="op")
    for _ in range(3):
        store.audit.create_policy_version("p", make_policy("p"), actor="op")
    for version in (2, 4, 3):
        store.audit.activate_policy_logged("p", version, actor="op")
    assert store.audit.activate_policy_logged("p", 3, actor="op") == (3, 3)  # no change, no entry
    assert [store.audit.rollback_policy("p", actor="op") for _ in range(3)] == [(3, 4), (4, 2), (2, 1)]
    with pytest.raises(ConflictError, match="no earlier active policy version"):
        store.audit.rollback_policy("p", actor="op")
    assert [e.action for e in store.audit.list_audit("p")].count("policy.activated") == 3


def test_rollback_counts_changes_made_without_the_log(store: SqlStore, project: str, policy: Policy) -> None:
    # the ``project`` fixture creates the project without the log; then a version is activated without it too
    store.audit.create_policy_version(project, make_policy(project), actor="op")
    store.audit.create_policy_version(project, make_policy(project), actor="op", activate=True)
    store.projects.activate_policy(project, 2)
    assert store.audit.rollback_policy(project, actor="op") == (2, 3)
    assert store.audit.rollback_policy(project, actor="op") == (3, 1)


def test_policy_versions_are_assigned_in_order(store: SqlStore, project: str) -> None:
    assert store.audit.create_policy_version(project, make_policy(project, version=9), actor="op").version == 2
    with pytest.raises(NotFoundError):
        store.audit.activate_policy_logged(project, 5, actor="op")


def test_skips_expire_and_are_per_reviewer(store: SqlStore, project: str, policy: Policy) -> None:
    items = make_items(1)
    store.items.ingest(project, items)
    token, claimed = store.items.claim_batch(project, worker="w")
    store.items.record_batch(project, make_batch_result(policy, claimed, "escalate"), token)
    task = store.reviews.claim_review(project, reviewer="ann", now=T0)
    ref, until = store.reviews.skip_review(task.task_id, task.token, seconds=60, now=T0)
    assert (ref.external_id, until) == (items[0].key, T0 + timedelta(seconds=60))
    assert store.reviews.claim_review(project, reviewer="ann", now=T0 + timedelta(seconds=59)) is None
    again = store.reviews.claim_review(project, reviewer="ann", now=T0 + timedelta(seconds=61))
    assert again is not None
    store.reviews.skip_review(again.task_id, again.token, seconds=600,
                              now=T0 + timedelta(seconds=61))  # updates the skip
    assert store.reviews.claim_review(project, reviewer="ann", now=T0 + timedelta(seconds=200)) is None
    assert store.reviews.claim_review(project, reviewer="ben", now=T0 + timedelta(seconds=200)) is not None


def test_ground_truth_in_arrival_order(store: SqlStore, project: str, policy: Policy) -> None:
    items = make_items(4)
    store.items.ingest(project, items, labels=["ham", None, None, "spam"])
    token, claimed = store.items.claim_batch(project, worker="w")
    store.items.record_batch(project, make_batch_result(policy, claimed, ["accept", "escalate", "accept",
                                                                          "escalate"]), token)
    for task in reversed(store.reviews.claim_reviews(project, reviewer="r", limit=10)):  # answered in reverse order
        store.reviews.submit_review(task.task_id, task.token, "ham")
    truth = store.items.ground_truth_in_order(project)
    assert [(t.item.key, t.label) for t in truth] == [(items[0].key, "ham"), (items[1].key, "ham"),
                                                      (items[3].key, "ham")]  # the human answer wins
    assert [t.item.key for t in store.items.ground_truth_in_order(project, limit=2)] == [items[1].key, items[3].key]
