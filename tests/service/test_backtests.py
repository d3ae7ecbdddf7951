"""Stored backtests in the store: written with their audit entry, listed newest first per version with a cursor, read
by id within their project only, each version's latest; on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pytest

from policies import NotFoundError
from service.store import SqlStore
from service.store.ops_models import BacktestPublic
from tests.factories import make_policy, make_replay_summary


def record(store: SqlStore, project: str, version: int = 1, *, active_version: int = 1, seed: int = 0,
           **summary: object) -> BacktestPublic:
    return store.audit.record_backtest(project, policy_version=version, active_version=active_version, actor="key:op",
                                 limit=500, batch_size=50, seed=seed, ground_truth=120,
                                 candidate=make_replay_summary(**summary), active=make_replay_summary(auto_labeled=10))


def test_a_backtest_is_stored_with_its_audit_entry(store: SqlStore, project: str) -> None:
    store.audit.create_policy_version(project, make_policy(project), actor="op")
    before = datetime.now(UTC)
    stored = record(store, project, 2, seed=2**32 - 1, auto_labeled=70, auto_precision=0.97)
    assert stored.created_at.tzinfo is not None
    assert before - timedelta(seconds=1) <= stored.created_at <= datetime.now(UTC)
    again = store.audit.get_backtest(project, stored.id)
    assert again == stored
    assert (again.policy_version, again.active_version, again.requested_by) == (2, 1, "key:op")
    assert (again.limit, again.batch_size, again.seed, again.ground_truth) == (500, 50, 2**32 - 1, 120)
    assert again.candidate == make_replay_summary(auto_labeled=70, auto_precision=0.97)
    assert again.active["auto_labeled"] == 10
    event = store.audit.list_audit(project)[-1]
    assert (event.action, event.actor) == ("policy.backtested", "key:op")
    assert event.detail == {"version": 2, "backtest_id": stored.id, "compared_with": 1, "ground_truth": 120,
                            "limit": 500, "batch_size": 50, "seed": 2**32 - 1}
    assert event.created_at == stored.created_at


def test_numpy_and_non_finite_figures_are_stored_as_json(store: SqlStore, project: str) -> None:
    stored = record(store, project, aggregator={"log_loss": np.float64("nan"), "brier": np.float64(0.1)},
                    items_per_s=float("inf"), tool_calls={"rules": np.int64(7)})
    again = store.audit.get_backtest(project, stored.id)
    assert again.candidate["aggregator"] == {"log_loss": None, "brier": 0.1}
    assert again.candidate["items_per_s"] is None
    assert again.candidate["tool_calls"] == {"rules": 7}
    assert type(again.candidate["tool_calls"]["rules"]) is int


def test_list_is_newest_first_per_version_with_a_cursor(store: SqlStore, project: str) -> None:
    store.audit.create_policy_version(project, make_policy(project), actor="op")
    ids = [record(store, project, 1 + i % 2).id for i in range(7)]  # versions 1, 2, 1, 2, 1, 2, 1
    of_v1 = [b.id for b in store.audit.list_backtests(project, 1)]
    assert of_v1 == [ids[6], ids[4], ids[2], ids[0]]
    assert [b.id for b in store.audit.list_backtests(project, 2)] == [ids[5], ids[3], ids[1]]
    first = store.audit.list_backtests(project, 1, limit=3)
    assert [b.id for b in first] == of_v1[:3]
    assert [b.id for b in store.audit.list_backtests(project, 1, before_id=first[-1].id, limit=3)] == of_v1[3:]
    assert store.audit.list_backtests(project, 1, before_id=ids[0]) == []
    latest = store.audit.latest_backtests(project)
    assert {v: b.id for v, b in latest.items()} == {1: ids[6], 2: ids[5]}


def test_unknown_versions_ids_and_projects(store: SqlStore, project: str) -> None:
    store.projects.create_project("other", make_policy("other"))
    theirs = record(store, "other")
    with pytest.raises(NotFoundError, match="policy version 3 does not exist in this project"):
        store.audit.list_backtests(project, 3)
    with pytest.raises(NotFoundError, match="policy version 3 does not exist in this project"):
        record(store, project, 3)
    with pytest.raises(NotFoundError, match=f"backtest {theirs.id} does not exist in project '{project}'"):
        store.audit.get_backtest(project, theirs.id)  # another project's backtest is not this project's
    with pytest.raises(NotFoundError, match="project 'nope' does not exist"):
        store.audit.get_backtest("nope", theirs.id)
    assert store.audit.list_backtests(project, 1) == []
    assert store.audit.latest_backtests(project) == {}
    assert [e.action for e in store.audit.list_audit(project)] == []  # the refused record left no entry
