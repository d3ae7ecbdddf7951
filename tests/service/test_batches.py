"""record_batch: bulk writes in one transaction, fencing by lease token, one label per (item, version)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import func, insert, select
from sqlalchemy.exc import IntegrityError

from agent.ports import BatchResult
from policies import ConflictError, InputError, Policy
from service.store import SqlStore
from service.store.base import item_t, label_t, task_t, vote_t
from service.store.db import read_tx, write_tx
from tests.factories import make_batch_result, make_decision, make_items, make_votes

T0 = datetime(2030, 1, 1, tzinfo=UTC)


def counts(store: SqlStore) -> tuple[int, int, int]:
    with read_tx(store.engine) as conn:
        return tuple(conn.execute(select(func.count()).select_from(t)).scalar_one()  # type: ignore[return-value]
                     for t in (vote_t, label_t, task_t))


def test_record_batch_writes_everything(store: SqlStore, project: str, policy: Policy) -> None:
    store.items.ingest(project, make_items(6))
    token, items = store.items.claim_batch(project, worker="w", size=6)
    result = make_batch_result(policy, items, ["accept", "accept", "escalate", "audit", "accept", "escalate"],
                               threshold=0.91, n_tools=4)
    result.decisions[2].review_kind = "cold_start"
    written = store.items.record_batch(project, result, token)
    assert (written.labeled, written.queued, written.votes, written.fenced) == (3, 3, 24, [])
    assert counts(store) == (24, 3, 3)
    assert store.items.count_items(project) == {"pending": 0, "leased": 0, "labeled": 3, "in_review": 3, "failed": 0}
    labels = store.learning.load_labels(project)
    first = labels["item-000000"][0]
    assert (first.label, first.source, first.policy_version, first.threshold) == ("ham", "agent", 1, 0.91)
    assert first.confidence == pytest.approx(result.decisions[0].confidence)
    with read_tx(store.engine) as conn:
        kinds = sorted(conn.execute(select(task_t.c.kind)).scalars())
        versions = set(conn.execute(select(vote_t.c.model_version)).scalars())
    assert kinds == ["audit", "cold_start", "escalation"]
    assert versions == {"rules-v1", "random-v1", "clf-v1", "retrieval-v1"}
    item = store.items.item_view(project, "item-000000").item
    assert (item.lease_owner, item.lease_expires_at) == (None, None)


def test_votes_round_trip_including_abstains(store: SqlStore, project: str, policy: Policy) -> None:
    store.items.ingest(project, make_items(1))
    token, items = store.items.claim_batch(project, worker="w")
    votes = make_votes(policy.labels, top=1, abstain=("rules",))
    decision = make_decision(items[0].key, "escalate", label="spam", confidence=0.6, votes=votes)
    store.items.record_batch(project, BatchResult(policy.key, 0.9, {}, [decision]), token)
    assert store.learning.load_votes(project, [items[0].key]) == {items[0].key: votes}
    with read_tx(store.engine) as conn:  # an abstain is SQL NULL, not JSON null
        assert conn.execute(select(func.count()).where(vote_t.c.distribution.is_(None))).scalar_one() == 1


def test_stale_token_writes_nothing(store: SqlStore, project: str, policy: Policy) -> None:
    store.items.ingest(project, make_items(4))
    stale, items = store.items.claim_batch(project, worker="slow", size=4, lease_seconds=10, now=T0)
    fresh, again = store.items.claim_batch(project, worker="fast", size=4, now=T0 + timedelta(seconds=11))
    assert [i.key for i in again] == [i.key for i in items]
    late = store.items.record_batch(project, make_batch_result(policy, items), stale, now=T0 + timedelta(seconds=12))
    assert (late.labeled, late.votes, len(late.fenced)) == (0, 0, 4)
    assert counts(store) == (0, 0, 0)
    assert store.items.count_items(project)["leased"] == 4  # still the fast worker's
    ok = store.items.record_batch(project, make_batch_result(policy, again), fresh, now=T0 + timedelta(seconds=12))
    assert ok.labeled == 4


def test_expired_lease_writes_nothing_even_if_nobody_reclaimed(store: SqlStore, project: str, policy: Policy) -> None:
    store.items.ingest(project, make_items(2))
    token, items = store.items.claim_batch(project, worker="w", lease_seconds=10, now=T0)
    late = store.items.record_batch(project, make_batch_result(policy, items), token, now=T0 + timedelta(seconds=10))
    assert late.fenced == [i.key for i in items]
    assert counts(store) == (0, 0, 0)


def test_partial_fencing_writes_only_the_items_still_held(store: SqlStore, project: str, policy: Policy) -> None:
    store.items.ingest(project, make_items(3))
    _, x_items = store.items.claim_batch(project, worker="x", size=1)
    w_token, w_items = store.items.claim_batch(project, worker="w", size=2)
    result = store.items.record_batch(project, make_batch_result(policy, x_items + w_items), w_token)
    assert result.fenced == [x_items[0].key]
    assert result.labeled == 2
    assert store.items.item_view(project, x_items[0].key).item.status == "leased"
    assert store.items.item_view(project, w_items[0].key).item.status == "labeled"


def test_record_without_token_writes_only_unheld_items(store: SqlStore, project: str, policy: Policy) -> None:
    store.items.ingest(project, make_items(3))
    store.items.claim_batch(project, worker="w", size=1)  # item 0 is held
    items = make_items(3)
    result = store.items.record_batch(project, make_batch_result(policy, items))
    assert result.fenced == ["item-000000"]
    assert result.labeled == 2
    again = store.items.record_batch(project, make_batch_result(policy, items))  # decided items are not rewritten
    assert (again.labeled, again.fenced) == (0, [i.key for i in items])


def test_unknown_items_are_fenced_not_created(store: SqlStore, project: str, policy: Policy) -> None:
    result = store.items.record_batch(project, make_batch_result(policy, make_items(2, prefix="ghost")))
    assert result.fenced == ["ghost-000000", "ghost-000001"]
    assert counts(store) == (0, 0, 0)


def test_database_refuses_a_second_label_per_item_and_version(store: SqlStore, project: str, policy: Policy) -> None:
    store.items.ingest(project, make_items(2))
    token, items = store.items.claim_batch(project, worker="w", size=2)
    store.items.record_batch(project, make_batch_result(policy, items), token)
    with read_tx(store.engine) as conn:
        item_id = conn.execute(select(label_t.c.item_id).limit(1)).scalar_one()
    row = {"project_id": 1, "item_id": item_id, "policy_version": 1, "label": "spam", "confidence": 1.0,
           "source": "human", "cost": 0.0, "reason": "", "created_at": T0}
    with pytest.raises(IntegrityError, match=r"(?i)unique|duplicate"), write_tx(store.engine) as conn:
        conn.execute(insert(label_t).values(**row))
    store.projects.add_policy_version(project, policy.with_version(2))
    with write_tx(store.engine) as conn:  # under another version the item may be labeled again
        conn.execute(insert(label_t).values(**{**row, "policy_version": 2}))
    assert [lab.policy_version for lab in store.learning.load_labels(project)[items[0].key]] == [1, 2]


def test_label_conflict_rolls_back_the_whole_batch(store: SqlStore, project: str, policy: Policy) -> None:
    store.items.ingest(project, make_items(3))
    token, items = store.items.claim_batch(project, worker="w", size=3)
    with read_tx(store.engine) as conn:
        item_id = conn.execute(select(item_t.c.id).where(item_t.c.external_id == items[1].key)).scalar_one()
    with write_tx(store.engine) as conn:  # someone labeled item 1 under this version behind the store's back
        conn.execute(insert(label_t).values(project_id=1, item_id=item_id, policy_version=1, label="ham",
                                            confidence=1.0, source="human", cost=0.0, reason="", created_at=T0))
    with pytest.raises(ConflictError, match="already has a label"):
        store.items.record_batch(project, make_batch_result(policy, items), token)
    assert counts(store) == (0, 1, 0)  # only the pre-existing label; no votes, no tasks
    assert store.items.count_items(project)["leased"] == 3


def test_record_batch_validates_decisions(store: SqlStore, project: str, policy: Policy) -> None:
    store.items.ingest(project, make_items(1))
    token, items = store.items.claim_batch(project, worker="w")
    bad_label = BatchResult(policy.key, 0.9, {}, [make_decision(items[0].key, "accept", label="eggs")])
    with pytest.raises(InputError, match="eggs"):
        store.items.record_batch(project, bad_label, token)
    wrong_key = BatchResult("other/1", 0.9, {}, [make_decision(items[0].key)])
    with pytest.raises(InputError, match="policy_key"):
        store.items.record_batch(project, wrong_key, token)
    twice = BatchResult(policy.key, 0.9, {}, [make_decision(items[0].key), make_decision(items[0].key)])
    with pytest.raises(InputError, match="twice"):
        store.items.record_batch(project, twice, token)
    assert counts(store) == (0, 0, 0)


def test_a_failed_tool_is_logged_with_the_batch(store: SqlStore, project: str, policy: Policy) -> None:
    """``tool_failures`` becomes one ``tool.failed`` audit entry per tool, in the batch's transaction; a batch without
    failures logs nothing."""
    store.items.ingest(project, make_items(4))
    token, items = store.items.claim_batch(project, worker="w", size=2)
    result = make_batch_result(policy, items, ["escalate", "escalate"], threshold=0.9)
    result.tool_failures = {"llm": "llm failed: the model failed on every item (HTTP 503)"}
    store.items.record_batch(project, result, token, actor="worker-7")
    token, items = store.items.claim_batch(project, worker="w", size=2)
    store.items.record_batch(project, make_batch_result(policy, items, ["accept", "accept"], threshold=0.9), token)
    logged = [e for e in store.audit.list_audit(project) if e.action == "tool.failed"]
    assert len(logged) == 1 and logged[0].actor == "worker-7"
    assert logged[0].detail == {"tool": "llm", "reason": "llm failed: the model failed on every item (HTTP 503)",
                                "items": 2, "policy_version": 1}
