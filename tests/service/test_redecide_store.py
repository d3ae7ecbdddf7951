"""The store's side of a re-decision (issue 20): the waiting tasks it reads, and the one transaction that closes the
tasks a certified snapshot auto-labels and re-prioritizes the rest. SQLite and PostgreSQL."""

from __future__ import annotations

from sqlalchemy import select

from agent.decisions import COLD_START_PRIORITY, COLD_START_REASON
from agent.ports import WAITING_REASON, BatchResult
from policies import Policy
from service.store import SqlStore
from service.store.base import item_t, label_t, task_t
from service.store.db import read_tx
from service.store.redecide import PROMOTED_ACTION, REDECIDED_ACTION, RELEASED_ACTION, AutoLabel, Reorder
from tests.factories import make_decision, make_items


def queue(store: SqlStore, project: str, policy: Policy, kinds: list[tuple[str, str]]) -> list[str]:
    """One item per (action, review kind), recorded; returns the keys in order."""
    items = make_items(len(kinds))
    store.items.ingest(project, items)
    token, claimed = store.items.claim_batch(project, worker="agent", size=len(kinds))
    spec = {it.key: k for it, k in zip(items, kinds, strict=True)}
    decisions = [make_decision(it.key, spec[it.key][0], label="spam", confidence=0.5, priority=float(i),
                               review_kind=spec[it.key][1]) for i, it in enumerate(claimed)]
    store.items.record_batch(project, BatchResult(policy.key, None, {}, decisions), token)
    return [it.key for it in items]


def task_ids(store: SqlStore, project: str) -> dict[str, int]:
    with read_tx(store.engine) as conn:
        rows = conn.execute(select(item_t.c.external_id, task_t.c.id).join(task_t, task_t.c.item_id == item_t.c.id))
        return {key: int(tid) for key, tid in rows}


def test_waiting_tasks_are_the_open_escalations_only(store: SqlStore, project: str, policy: Policy) -> None:
    keys = queue(store, project, policy, [("escalate", "escalation"), ("audit", "audit"),
                                          ("escalate", "cold_start"), ("escalate", "escalation"),
                                          ("escalate", "escalation")])
    claimed = store.reviews.claim_review(project, reviewer="alice")  # the highest priority: keys[4]
    assert claimed is not None and claimed.item.key == keys[4]
    waiting = store.reviews.waiting_tasks(project, policy_version=policy.version)
    assert [w.item.key for w in waiting] == [keys[3], keys[0]]  # by priority; not the audit, sample or claimed one
    assert waiting[0].item.text is not None
    assert store.reviews.waiting_tasks(project, policy_version=policy.version + 1) == []


def test_settle_closes_open_tasks_with_agent_labels_and_logs_it(store: SqlStore, project: str,
                                                                policy: Policy) -> None:
    keys = queue(store, project, policy, [("escalate", "escalation")] * 3)
    ids = task_ids(store, project)
    out = store.reviews.settle_redecided(
        project, policy_version=policy.version, threshold=0.8, snapshot=7,
        accepted=[AutoLabel(ids[keys[0]], "ham", 0.93, 1.5, "re-decided")],
        reordered=[Reorder(ids[keys[1]], 0.75, "spam", 0.4, "confidence 0.400 < 0.800")], actor="worker")
    assert (out.closed, out.skipped, out.reordered) == ([ids[keys[0]]], [], 1)
    with read_tx(store.engine) as conn:
        label = conn.execute(select(label_t.c.label, label_t.c.source, label_t.c.threshold)).one()
        tasks = {tid: (status, prio, sugg, conf) for tid, status, prio, sugg, conf in conn.execute(
            select(task_t.c.id, task_t.c.status, task_t.c.priority, task_t.c.suggestion, task_t.c.confidence))}
    assert tuple(label) == ("ham", "agent", 0.8)
    assert tasks[ids[keys[0]]][0] == "done"
    assert tasks[ids[keys[1]]] == ("open", 0.75, "spam", 0.4)
    assert tasks[ids[keys[2]]][0] == "open"
    assert store.items.item_view(project, keys[0]).item.status == "labeled"
    assert store.reviews.redecided_count(project) == 1
    event = [e for e in store.audit.list_audit(project) if e.action == REDECIDED_ACTION]
    assert len(event) == 1 and event[0].detail["auto_labeled"] == 1 and event[0].detail["snapshot"] == 7
    # the closed task left the queue; the others stay, by priority (2.0 recorded, then 0.75 given)
    waiting = store.reviews.waiting_tasks(project, policy_version=policy.version)
    assert [w.item.key for w in waiting] == [keys[2], keys[1]]
    assert waiting[1].reason == "confidence 0.400 < 0.800"  # the re-decision's reason replaces the old one


def test_a_claimed_task_is_never_redecided_under_its_reviewer(store: SqlStore, project: str, policy: Policy) -> None:
    keys = queue(store, project, policy, [("escalate", "escalation")] * 2)
    ids = task_ids(store, project)
    waiting = store.reviews.waiting_tasks(project, policy_version=policy.version)  # read while both are open ...
    assert len(waiting) == 2
    task = store.reviews.claim_review(project, reviewer="alice")  # ... then alice claims one
    assert task is not None
    mine = task.task_id
    other = next(i for i in ids.values() if i != mine)
    out = store.reviews.settle_redecided(project, policy_version=policy.version, threshold=0.8, snapshot=3,
                                 accepted=[AutoLabel(mine, "ham", 0.99, 1.0, "r"), AutoLabel(other, "ham", 0.99, 1.0,
                                                                                             "r")],
                                 reordered=[Reorder(mine, 0.0, "ham", 0.99, "re-decided")], actor="worker")
    assert out.closed == [other] and out.skipped == [mine]
    with read_tx(store.engine) as conn:
        labeled = {r[0] for r in conn.execute(select(label_t.c.item_id))}
        status, prio = conn.execute(select(task_t.c.status, task_t.c.priority).where(task_t.c.id == mine)).one()
    assert len(labeled) == 1  # only the open one got the agent's label
    assert status == "claimed" and prio != 0.0  # not re-prioritized either
    truth = store.reviews.submit_review(mine, task.token, "spam", project=project)  # alice's answer still counts
    assert truth.label == "spam"
    assert store.items.item_view(project, task.item.key).item.status == "labeled"
    assert keys  # both keys exist


def test_nothing_to_settle_writes_only_the_log(store: SqlStore, project: str, policy: Policy) -> None:
    queue(store, project, policy, [("escalate", "escalation")])
    out = store.reviews.settle_redecided(project, policy_version=policy.version, threshold=0.9, snapshot=1, accepted=[],
                                 reordered=[], actor="worker")
    assert (out.closed, out.skipped, out.reordered) == ([], [], 0)
    assert store.reviews.redecided_count(project) == 0


def test_release_turns_the_unclaimed_samples_into_waiting_escalations(store: SqlStore, project: str,
                                                                       policy: Policy) -> None:
    keys = queue(store, project, policy, [("escalate", "cold_start"), ("escalate", "cold_start"),
                                          ("audit", "audit"), ("escalate", "escalation"), ("escalate", "cold_start")])
    claimed = store.reviews.claim_review(project, reviewer="alice")  # the highest priority: keys[4], a sample
    assert claimed is not None and claimed.item.key == keys[4]
    assert store.reviews.release_samples(project, policy_version=policy.version + 1, reason="x", actor="w") == []
    released = store.reviews.release_samples(project, policy_version=policy.version, reason="released", actor="w")
    assert sorted(released) == sorted([keys[0], keys[1]])  # not the claimed sample, the audit or the escalation
    with read_tx(store.engine) as conn:
        rows = conn.execute(select(item_t.c.external_id, task_t.c.kind).join(task_t, task_t.c.item_id == item_t.c.id))
        kinds = {key: kind for key, kind in rows}
    assert kinds == {keys[0]: "escalation", keys[1]: "escalation", keys[2]: "audit", keys[3]: "escalation",
                     keys[4]: "cold_start"}
    waiting = {w.item.key: w.reason for w in store.reviews.waiting_tasks(project, policy_version=policy.version)}
    assert waiting[keys[0]] == waiting[keys[1]] == "released" and keys[4] not in waiting
    event = [e for e in store.audit.list_audit(project) if e.action == RELEASED_ACTION]
    assert len(event) == 1 and event[0].detail["samples_released"] == 2
    # nothing left to release: no second log entry
    assert store.reviews.release_samples(project, policy_version=policy.version, reason="x", actor="w") == []
    assert len([e for e in store.audit.list_audit(project) if e.action == RELEASED_ACTION]) == 1


def waiting_queue(store: SqlStore, project: str, policy: Policy, kinds: list[str]) -> list[str]:
    """One item per kind: "sample" (a cold-start sample), "waiting" (a cold-start item waiting for the agent) or
    "escalation" (an ordinary one, of higher priority than the waiting ones); returns the keys in order."""
    items = make_items(len(kinds))
    store.items.ingest(project, items)
    token, claimed = store.items.claim_batch(project, worker="agent", size=len(kinds))
    spec = dict(zip((it.key for it in items), kinds, strict=True))
    decisions = []
    for it in claimed:
        kind = spec[it.key]
        priority = {"sample": COLD_START_PRIORITY, "escalation": 0.9, "waiting": 0.5}[kind]
        d = make_decision(it.key, "escalate", label="spam", confidence=0.5, priority=priority,
                          review_kind="cold_start" if kind == "sample" else "escalation")
        d.reason = WAITING_REASON if kind == "waiting" else d.reason
        decisions.append(d)
    store.items.record_batch(project, BatchResult(policy.key, None, {}, decisions), token)
    return [it.key for it in items]


def test_waiting_items_are_nobodys_until_promoted_to_samples(store: SqlStore, project: str, policy: Policy) -> None:
    """Cold-start items waiting for the agent are never handed to reviewers (whose choice by learning value would
    bias the samples taken later); when no sample is unanswered, the oldest of them become samples."""
    keys = waiting_queue(store, project, policy, ["waiting", "sample", "waiting", "escalation", "waiting", "waiting"])
    promote = {"policy_version": policy.version, "limit": 2,
               "reason": COLD_START_REASON, "priority": COLD_START_PRIORITY, "actor": "w"}
    sample = store.reviews.claim_review(project, reviewer="alice")
    assert sample is not None and sample.item.key == keys[1]
    assert store.reviews.promote_waiting(project, **promote) == []  # a sample is still unanswered (claimed)
    store.reviews.submit_review(sample.task_id, sample.token, "spam")
    other = store.reviews.claim_review(project, reviewer="bob")  # the ordinary escalation; the waiting ones: never
    assert other is not None and other.item.key == keys[3]
    assert store.reviews.claim_review(project, reviewer="carol") is None
    assert sorted(store.reviews.promote_waiting(project, **promote)) == sorted([keys[0], keys[2]])  # the oldest two
    with read_tx(store.engine) as conn:
        rows = conn.execute(select(item_t.c.external_id, task_t.c.kind, task_t.c.reason, task_t.c.priority)
                            .join(task_t, task_t.c.item_id == item_t.c.id))
        tasks = {r[0]: tuple(r[1:]) for r in rows}
    assert tasks[keys[0]] == tasks[keys[2]] == ("cold_start", COLD_START_REASON, COLD_START_PRIORITY)
    assert tasks[keys[4]][:2] == tasks[keys[5]][:2] == ("escalation", WAITING_REASON)
    assert store.reviews.promote_waiting(project, **promote) == []  # the promoted samples are unanswered now
    assert store.reviews.promote_waiting(project, **{**promote, "policy_version": policy.version + 1}) == []
    first = store.reviews.claim_review(project, reviewer="carol")
    assert first is not None and first.item.key == keys[0] and first.kind == "cold_start"  # oldest first
    events = [e for e in store.audit.list_audit(project) if e.action == PROMOTED_ACTION]
    assert len(events) == 1 and events[0].detail["samples_promoted"] == 2
