"""Metrics agree with the database: the JSON of one project and the Prometheus text of all; the health check."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from agent.calibration import cp_interval
from service.api.app import create_app
from service.store import ReviewAnswer, SqlStore
from service.store.base import calib_t, item_t, label_t, project_t, task_t
from service.store.db import make_engine, read_tx
from tests.factories import make_policy
from tests.service.api.conftest import decide, error_message
from tools.base import ModelInfo


def db_counts(store: SqlStore, table, column, project: str) -> dict[str, int]:  # type: ignore[no-untyped-def]
    with read_tx(store.engine) as conn:
        pid = conn.execute(select(project_t.c.id).where(project_t.c.name == project)).scalar_one()
        rows = conn.execute(select(column, func.count()).where(table.c.project_id == pid).group_by(column)).all()
    return {k: n for k, n in rows}


def answer(store: SqlStore, project: str, reviewer: str, labels: dict[str, str]) -> None:
    """``reviewer`` claims every task they may take and answers from ``labels`` (by item key)."""
    tasks = store.reviews.claim_reviews(project, reviewer=reviewer, limit=100)
    store.reviews.submit_reviews([ReviewAnswer(t.task_id, t.token, labels[t.item.key]) for t in tasks], project=project)


@pytest.fixture
def busy(store: SqlStore, project: str) -> dict[str, str]:
    """Agent labels, escalations, audits (2 right, 1 wrong), an open and a claimed task; a second project with
    overlap 2 where the reviewers agree on one task and disagree on another; model versions."""
    keys = decide(store, project, ["accept", "escalate", "audit", "accept", "escalate", "audit", "audit", "escalate"],
                  threshold=0.8)
    # make_batch_result's labels alternate ham, spam: the audits (i = 2, 5, 6) suggested ham, spam, ham
    truth = {keys[1]: "ham", keys[2]: "ham", keys[4]: "ham", keys[5]: "spam", keys[6]: "spam", keys[7]: "spam"}
    answer(store, project, "alice", truth)
    decide(store, project, ["escalate", "escalate", "accept"], start=20, threshold=0.85)
    store.reviews.claim_review(project, reviewer="bob")
    store.projects.create_project("pair", make_policy("pair", overlap=2, max_overlap=2))
    pair = decide(store, "pair", ["escalate", "escalate"])
    answer(store, "pair", "ann", {pair[0]: "ham", pair[1]: "ham"})
    answer(store, "pair", "ben", {pair[0]: "ham", pair[1]: "spam"})
    for version in ("clf-1", "clf-2"):
        store.learning.save_model_version(project, f"{project}/1", ModelInfo("clf", version, 10))
    store.learning.save_model_version(project, f"{project}/1", ModelInfo("knn", "knn-1", 10))
    return truth


def test_project_metrics_equal_the_database(client: TestClient, project: str, store: SqlStore,
                                            busy: dict[str, str]) -> None:
    m = client.get(f"/projects/{project}/metrics").json()
    items = db_counts(store, item_t, item_t.c.status, project)
    assert {k: v for k, v in m["items"].items() if v} == items
    assert sum(m["items"].values()) == 11
    labels = db_counts(store, label_t, label_t.c.source, project)
    assert m["labels"] == {"agent": labels["agent"], "human": labels["human"]} == {"agent": 3, "human": 6}
    tasks = db_counts(store, task_t, task_t.c.status, project)
    assert m["queue"]["depth"] == tasks.get("open", 0) + tasks.get("claimed", 0) == 2
    assert (m["queue"]["open"], m["queue"]["claimed"], m["queue"]["done"]) == (1, 1, 6)
    assert m["queue"]["oldest_age_seconds"] >= 0
    assert m["auto_rate"] == pytest.approx(3 / (3 + 8))
    with read_tx(store.engine) as conn:
        audits = conn.execute(select(calib_t.c.predicted, calib_t.c.truth).where(calib_t.c.kind == "audit")).all()
    right = sum(p == t for p, t in audits)
    assert (m["precision"]["audits"], m["precision"]["correct"]) == (len(audits), right) == (3, 2)
    assert (m["precision"]["ci_low"], m["precision"]["ci_high"]) == pytest.approx(cp_interval(2, 3))
    assert m["precision"]["estimate"] == pytest.approx(2 / 3)
    assert m["threshold"] == 0.85
    assert m["throughput"] == {"labeled_last_minute": 9, "labeled_last_hour": 9, "ingested_last_minute": 11,
                               "ingested_last_hour": 11}
    assert [(v["tool"], v["version"]) for v in m["model_versions"]] == [("clf", "clf-2"), ("knn", "knn-1")]
    assert m["agreement"] == {"tasks": 0, "unanimous": 0, "unanimous_rate": None, "pairwise": None}
    pair = client.get("/projects/pair/metrics").json()
    # the split task asks for a third answer (max_overlap 2 reached: settled by the earliest answer)
    assert pair["agreement"] == {"tasks": 2, "unanimous": 1, "unanimous_rate": 0.5, "pairwise": 0.5}


def parse_prometheus(text: str) -> dict[tuple[str, frozenset], float]:
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = re.fullmatch(r'([a-z_]+)(?:\{(.*)\})? (\S+)', line)
        assert match, line
        labels = frozenset(re.findall(r'(\w+)="([^"]*)"', match.group(2) or ""))
        samples[(match.group(1), labels)] = float(match.group(3))
    return samples


def test_prometheus_text_equals_the_database(client: TestClient, project: str, store: SqlStore,
                                             busy: dict[str, str]) -> None:
    response = client.get("/metrics")
    assert response.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    samples = parse_prometheus(response.text)
    assert samples[("labelagent_projects", frozenset())] == 2
    for name in (project, "pair"):
        for status, n in db_counts(store, item_t, item_t.c.status, name).items():
            assert samples[("labelagent_items", frozenset({("project", name), ("status", status)}))] == n
        for source, n in db_counts(store, label_t, label_t.c.source, name).items():
            assert samples[("labelagent_labels", frozenset({("project", name), ("source", source)}))] == n
        for status, n in db_counts(store, task_t, task_t.c.status, name).items():
            assert samples[("labelagent_review_tasks", frozenset({("project", name), ("status", status)}))] == n
    p = frozenset({("project", project)})
    assert samples[("labelagent_review_queue_depth", p)] == 2
    assert samples[("labelagent_audits", p)] == 3
    assert samples[("labelagent_audits_correct", p)] == 2
    assert samples[("labelagent_threshold", p)] == 0.85
    assert ("labelagent_threshold", frozenset({("project", "pair")})) not in samples  # no auto label yet
    assert response.text.count("# TYPE labelagent_items gauge") == 1


def test_metrics_of_an_empty_and_an_unknown_project(client: TestClient, project: str) -> None:
    m = client.get(f"/projects/{project}/metrics").json()
    assert (m["auto_rate"], m["threshold"], m["queue"]["oldest_age_seconds"]) == (None, None, None)
    assert m["precision"] == {"audits": 0, "correct": 0, "estimate": None, "ci_low": 0.0, "ci_high": 1.0,
                              "level": 0.95}
    response = client.get("/projects/nope/metrics")
    assert (response.status_code, error_message(response)) == (404, "project 'nope' does not exist")


def test_health(client: TestClient, tmp_path) -> None:  # type: ignore[no-untyped-def]
    assert client.get("/health").json() == {"status": "ok", "database": "ok"}
    broken = SqlStore(make_engine(f"sqlite:///{tmp_path}/missing/dir/x.db"))
    with TestClient(create_app(store=broken)) as other:
        response = other.get("/health")
    assert response.status_code == 503
    assert response.json()["status"] == "unavailable"
    assert response.json()["database"].startswith("OperationalError: ")


def test_metrics_count_the_waiting_items_the_agent_took_over(client: TestClient, project: str,
                                                             store: SqlStore) -> None:
    from service.store.redecide import AutoLabel

    decide(store, project, ["escalate", "escalate", "accept"])
    waiting = store.reviews.waiting_tasks(project, policy_version=1)
    store.reviews.settle_redecided(project, policy_version=1, threshold=0.8, snapshot=2, actor="worker",
                           accepted=[AutoLabel(waiting[0].task_id, "ham", 0.95, 1.0, "re-decided")], reordered=[])
    m = client.get(f"/projects/{project}/metrics").json()
    assert (m["queue"]["taken_over"], m["queue"]["depth"], m["labels"]["agent"]) == (1, 1, 2)
    assert m["auto_rate"] == pytest.approx(2 / 3)  # three decisions: two auto labels, one still waiting
    samples = parse_prometheus(client.get("/metrics").text)
    assert samples[("labelagent_review_tasks_taken_over", frozenset({("project", project)}))] == 1


def test_metrics_count_the_graph_runs_a_tool_failed_in(client: TestClient, project: str, store: SqlStore) -> None:
    """``tool.failed`` audit entries (written with their batch) are counted per tool, in the JSON and as a counter."""
    from tests.factories import make_batch_result, make_items

    policy = store.projects.active_policy(project)
    store.items.ingest(project, make_items(6, start=100))
    for failures in ({"llm": "llm failed: HTTP 503"}, {"llm": "llm failed: timeout", "remote": "remote failed"}, {}):
        token, items = store.items.claim_batch(project, worker="w", size=2)
        result = make_batch_result(policy, items, ["escalate", "escalate"], threshold=0.9)
        result.tool_failures = failures
        store.items.record_batch(project, result, token)
    assert client.get(f"/projects/{project}/metrics").json()["tool_failures"] == {"llm": 2, "remote": 1}
    samples = parse_prometheus(client.get("/metrics").text)
    for tool, n in (("llm", 2), ("remote", 1)):
        assert samples[("labelagent_tool_failures_total", frozenset({("project", project), ("tool", tool)}))] == n
    assert "# TYPE labelagent_tool_failures_total counter" in client.get("/metrics").text
