"""Restarts keep the certificate (issue 14): a worker started on an existing project, and a second one joining it,
decide their first batch with the snapshot persisted before the stop: same threshold, auto labels at once, every
auto label naming that snapshot. The full figure (banking77 to item 8,000) is ``python -m bench.restart``."""

from __future__ import annotations

import json

import pytest
from sqlalchemy import select

from agent.persist import restore_snapshot, snapshot_state
from agent.runner import BatchLabeler
from bench.restart import replay_then_restart
from policies import example_policy
from service.api.ops.labels import export_labels
from service.api.ops.metrics import project_metrics
from service.offline.datasets import load_csv
from service.store import SqlStore
from service.store.base import label_t, task_t
from service.store.snapshots import snapshot_t
from tests.factories import dataset_path
from tools.registry import build_tools

LIMIT = 1200  # sms_spam is certified well before this (the replay test certifies within its first 2,000 items)


@pytest.mark.parametrize("certification", ["per_batch", "anytime", "betting"])
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
    _check_metrics_and_export(store, policy.project, out["persisted_snapshot"])


def _check_metrics_and_export(store: SqlStore, project: str, persisted: int) -> None:
    """The metrics name the snapshot in force and count only audits of would-be auto labels (recomputed here from
    the tasks and snapshots); the label export carries each auto label's snapshot id."""
    metrics = project_metrics(store=store, project=project)
    assert metrics.snapshot is not None and metrics.snapshot.latest_id == persisted
    with store.engine.connect() as conn:
        thresholds = dict(conn.execute(select(snapshot_t.c.id, snapshot_t.c.threshold)).all())
        audits = conn.execute(select(task_t.c.snapshot_id, task_t.c.confidence, task_t.c.suggestion, label_t.c.label)
                              .join(label_t, (label_t.c.item_id == task_t.c.item_id) & (label_t.c.source == "human"))
                              .where(task_t.c.kind == "audit", task_t.c.status == "done")).all()
    would = [(sug, truth) for sid, conf, sug, truth in audits
             if thresholds.get(sid) is not None and conf >= thresholds[sid]]
    assert metrics.snapshot.would_accept.audits == len(would) > 0
    assert metrics.snapshot.would_accept.correct == sum(sug == truth for sug, truth in would)
    assert metrics.snapshot.would_accept.audits <= metrics.precision.audits
    page = export_labels(store=store, project=project, fmt="jsonl", cursor=None, limit=100_000)
    records = [json.loads(line) for line in page.body.splitlines()]
    assert {r["snapshot_id"] is not None for r in records if r["source"] == "agent"} == {True}
    assert {r["snapshot_id"] for r in records if r["source"] == "human"} == {None}


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
