"""Restarts keep the certificate (issue 14): a worker started on an existing project, and a second one joining it,
decide their first batch with the snapshot persisted before the stop: same threshold, auto labels at once, every
auto label naming that snapshot. The full figure (banking77 to item 8,000) is ``python -m bench.restart``."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from agent.persist import restore_snapshot, snapshot_state
from agent.runner import BatchLabeler
from bench.restart import replay_then_restart
from policies import example_policy
from service.datasets import load_csv
from service.store import SqlStore
from service.store.base import label_t, task_t
from tests.factories import dataset_path
from tools.registry import build_tools

LIMIT = 1200  # sms_spam is certified well before this (the replay test certifies within its first 2,000 items)


@pytest.mark.parametrize("certification", ["per_batch", "anytime"])
def test_restarted_and_joining_workers_decide_with_the_persisted_certificate(store: SqlStore,
                                                                              certification: str) -> None:
    policy = example_policy("sms_spam").model_copy(update={"certification": certification})
    rows = load_csv(dataset_path("sms_spam.csv"))
    out = replay_then_restart(rows, policy, store, limit=LIMIT, seed=0, batch_size=128)
    persisted = out["persisted_threshold"]
    assert persisted is not None, out  # the replay certified: there is something to keep
    for started in (out["restarted"], out["joining"]):
        assert started["restored_snapshot"] == out["persisted_snapshot"]
        assert started["threshold"] == persisted  # the first batch is decided with the persisted certificate ...
        assert started["snapshot_id"] == out["persisted_snapshot"]
        assert started["auto_labels"] > 0  # ... and no cold start: items are auto-labeled at once
        assert started["labeled"] == started["auto_labels"]
    # Every auto label of the run names a persisted snapshot; those after the restart name the restored one.
    with store.engine.connect() as conn:
        agent = conn.execute(select(label_t.c.snapshot_id, label_t.c.threshold)
                             .where(label_t.c.source == "agent")).all()
        audits = conn.execute(select(task_t.c.snapshot_id).where(task_t.c.kind == "audit")).all()
    assert agent and all(sid is not None for sid, _ in agent)
    after = [t for sid, t in agent if sid == out["persisted_snapshot"]]
    assert len(after) >= out["restarted"]["auto_labels"] + out["joining"]["auto_labels"]
    assert all(t == persisted for t in after)
    assert all(sid is not None for (sid,) in audits)  # an audit is drawn only under a certificate


def test_a_snapshot_of_other_tools_is_not_restored() -> None:
    policy = example_policy("sms_spam")
    other = example_policy("sms_spam_adaptive")
    source = BatchLabeler(other, build_tools(other)).learner.snapshot
    target = BatchLabeler(policy, build_tools(policy))
    before = target.learner.snapshot
    assert not restore_snapshot(target.learner, snapshot_state(source, policy.certification))
    assert target.learner.snapshot is before
    # the same tools but the other certification rule: its spending state would not mean the same thing
    doc = snapshot_state(before, "anytime" if policy.certification == "per_batch" else "per_batch")
    assert not restore_snapshot(target.learner, doc)
