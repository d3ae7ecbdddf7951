"""End to end over real HTTP: ``labelagent serve`` (uvicorn on a free loopback port, the API with its in-process
worker) on a temporary SQLite file, real sms_spam items and the policy's real tools. Clients talk to it with httpx
only; the test reads the database directly to check what the API says."""

from __future__ import annotations

import json
import re
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from sqlalchemy import func, select

from policies import example_policy
from policies.io import EXAMPLES_DIR
from service.offline.datasets import load_csv
from service.offline.liveserver import LiveService
from service.offline.replay import shuffled
from service.store import SqlStore
from service.store.base import item_t, label_t, project_t, review_t, task_t
from service.store.db import make_engine, read_tx
from service.store.migrate import upgrade
from tests.factories import dataset_path
from tests.service.runtime.helpers import labels_per_item, labels_per_item_version, wait_until

N_ITEMS = 1000
INGEST_BATCH = 100
COLD_START = 300  # items labeled before the rest is sent (more than the policy's min_calibration)


@dataclass
class Server:
    url: str
    store: SqlStore
    operator: str
    reviewer: str


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    dataset_path("sms_spam.csv")  # skip early (before starting anything) without the data
    tmp = tmp_path_factory.mktemp("e2e")
    url = f"sqlite:///{tmp / 'service.db'}"
    engine = make_engine(url)
    upgrade(engine)  # what `labelagent db upgrade` does
    store = SqlStore(engine)
    operator, _ = store.projects.create_key(name="e2e operator", role="operator")
    reviewer, _ = store.projects.create_key(name="e2e reviewer", role="reviewer")
    live = LiveService(url, log=tmp / "serve.log", workers=1)
    try:
        live.start()
        yield Server(live.url, store, operator, reviewer)
    finally:
        code = live.stop()
        engine.dispose()
    assert code == 0, f"labelagent serve exited with {code} on SIGTERM:\n{live.log_tail()}"


def client(server: Server, key: str) -> httpx.Client:
    return httpx.Client(base_url=server.url, headers={"X-API-Key": key}, timeout=30.0)


@dataclass
class ScriptedReviewer:
    """Claims and answers through the API from the dataset's labels until stopped; records every claim."""

    server: Server
    project: str
    truth: dict[str, str]
    stop: threading.Event = field(default_factory=threading.Event)
    claimed: list[int] = field(default_factory=list)
    answered: dict[str, str] = field(default_factory=dict)
    kinds: Counter[str] = field(default_factory=Counter)
    errors: list[BaseException] = field(default_factory=list)

    def run(self) -> None:
        idle = 0.01
        try:
            with client(self.server, self.server.reviewer) as http:
                while not self.stop.is_set():
                    r = http.post(f"/projects/{self.project}/reviews/claim", json={"reviewer": "scripted"})
                    if r.status_code == 204:  # an empty queue: back off, as a person would
                        self.stop.wait(idle)
                        idle = min(2 * idle, 0.1)
                        continue
                    assert r.status_code == 200, r.text
                    idle = 0.01
                    task = r.json()
                    key = task["item"]["external_id"]
                    if task["kind"] == "audit":  # the agent's label is hidden from the reviewer
                        assert (task["suggestion"], task["confidence"], task["evidence"]) == (None, None, None)
                    self.claimed.append(task["task_id"])
                    s = http.post(f"/reviews/{task['task_id']}/submit",
                                  json={"lease_token": task["lease_token"], "label": self.truth[key]})
                    assert s.status_code == 200, s.text
                    assert s.json()["settled"] is True  # overlap 1: one answer settles the item
                    self.answered[key] = self.truth[key]
                    self.kinds[task["kind"]] += 1
        except BaseException as exc:  # reported by the test
            self.errors.append(exc)


def db_counts(store: SqlStore, project: str, column) -> dict[str, int]:  # type: ignore[no-untyped-def]
    table = column.table
    with read_tx(store.engine) as conn:
        pid = conn.execute(select(project_t.c.id).where(project_t.c.name == project)).scalar_one()
        rows = conn.execute(select(column, func.count()).where(table.c.project_id == pid).group_by(column)).all()
    return {k: n for k, n in rows}


def prometheus(text: str, name: str, project: str) -> dict[str, float]:
    """``{status or source: value}`` of one ``labelagent_*`` family for one project."""
    out: dict[str, float] = {}
    for match in re.finditer(rf'^{name}\{{project="{re.escape(project)}",(\w+)="(\w+)"\}} (\S+)$', text, re.M):
        out[match.group(2)] = float(match.group(3))
    return out


def test_a_thousand_items_over_http_each_labeled_once_and_metrics_agree(server: Server) -> None:
    rows = shuffled(load_csv(dataset_path("sms_spam.csv")), seed=0, limit=N_ITEMS)
    truth = {r.item.key: r.label for r in rows}
    project = "sms_e2e"
    operator = client(server, server.operator)
    policy = example_policy("sms_spam").model_dump(mode="json") | {"project": project}
    r = operator.post("/projects", json={"name": project, "policy": policy})
    assert r.status_code == 201, r.text

    reviewer = ScriptedReviewer(server, project, truth)
    thread = threading.Thread(target=reviewer.run, name="scripted-reviewer", daemon=True)
    thread.start()
    try:
        for start in range(0, N_ITEMS, INGEST_BATCH):
            chunk = rows[start:start + INGEST_BATCH]
            body = {"items": [{"external_id": x.item.key, "data": {"text": x.item.text}} for x in chunk]}
            r = operator.post(f"/projects/{project}/items", json=body)
            assert r.status_code == 200, r.text
            assert len(r.json()["inserted"]) == len(chunk) and r.json()["duplicates"] == []
            if start + INGEST_BATCH == COLD_START:  # the first items teach the agent (humans answer them all)
                wait_until(lambda: server.store.items.count_items(project)["labeled"] == COLD_START
                           or bool(reviewer.errors), timeout=30, what=f"the first {COLD_START} items labeled")
        wait_until(lambda: server.store.items.count_items(project)["labeled"] == N_ITEMS or bool(reviewer.errors),
                   timeout=50, what=f"all {N_ITEMS} items labeled (workers and the scripted reviewer)")
    finally:
        reviewer.stop.set()
        thread.join(10)
    assert not reviewer.errors, reviewer.errors[:1]

    # the queue is empty, as the operators' listing says
    queue = operator.get(f"/projects/{project}/reviews", params={"limit": 1}).json()
    for status in ("open", "claimed"):
        assert operator.get(f"/projects/{project}/reviews", params={"status": status}).json()["total"] == 0
    # every task was answered by the reviewer or taken over by the agent (a new certified snapshot re-decided it while
    # it waited: issue 20), never both
    taken_over = server.store.reviews.redecided_count(project)
    assert queue["total"] == len(reviewer.claimed) + taken_over and len(reviewer.claimed) > 0

    # every item labeled exactly once: one label per item and policy version, none unlabeled, none twice
    per_item = labels_per_item(server.store, project)
    assert len(per_item) == N_ITEMS and set(per_item.values()) == {1}
    assert set(labels_per_item_version(server.store, project).values()) == {1}
    assert db_counts(server.store, project, item_t.c.status) == {"labeled": N_ITEMS}
    reviews = db_counts(server.store, project, review_t.c.reviewer)
    assert reviews == {"scripted": len(reviewer.claimed)}
    assert len(set(reviewer.claimed)) == len(reviewer.claimed), "no task was handed out twice"

    # the export (every page) is the labels table; human labels are the reviewer's answers
    exported: list[dict] = []
    cursor = None
    while True:
        params = {"limit": 300, **({"cursor": cursor} if cursor else {})}
        page = operator.get(f"/projects/{project}/labels", params=params)
        exported += [json.loads(line) for line in page.text.splitlines() if line]
        cursor = page.headers["X-Next-Cursor"]
        if "Link" not in page.headers:
            break
    assert sorted(x["external_id"] for x in exported) == sorted(truth)
    human = {x["external_id"]: x["label"] for x in exported if x["source"] == "human"}
    assert human == reviewer.answered
    agent = [x for x in exported if x["source"] == "agent"]
    assert agent, "the agent took over once calibrated"
    assert sum(x["label"] == truth[x["external_id"]] for x in agent) / len(agent) >= 0.95

    # /projects/{p}/metrics and /metrics agree with the database
    labels = db_counts(server.store, project, label_t.c.source)
    tasks = db_counts(server.store, project, task_t.c.status)
    m = operator.get(f"/projects/{project}/metrics").json()
    assert {k: v for k, v in m["items"].items() if v} == {"labeled": N_ITEMS}
    assert m["labels"] == {"agent": labels.get("agent", 0), "human": labels.get("human", 0)}
    assert m["labels"]["human"] == len(reviewer.answered)
    assert (m["queue"]["depth"], m["queue"]["open"], m["queue"]["claimed"]) == (0, 0, 0)
    assert m["queue"]["done"] == tasks["done"] == len(reviewer.claimed) + taken_over and set(tasks) == {"done"}
    assert m["queue"]["taken_over"] == taken_over
    assert m["auto_rate"] == pytest.approx(labels["agent"] / (labels["agent"] + len(reviewer.claimed)))
    assert m["precision"]["audits"] == reviewer.kinds["audit"]
    assert m["throughput"]["ingested_last_hour"] == N_ITEMS
    text = operator.get("/metrics")
    assert text.status_code == 200 and text.headers["content-type"].startswith("text/plain")
    assert prometheus(text.text, "labelagent_items", project) == {s: float(n) for s, n in m["items"].items()}
    assert prometheus(text.text, "labelagent_labels", project) == {s: float(n) for s, n in labels.items()}
    assert prometheus(text.text, "labelagent_review_tasks", project) == {"open": 0.0, "claimed": 0.0,
                                                                         "done": float(tasks["done"])}
    assert re.search(rf'^labelagent_review_queue_depth\{{project="{project}"\}} 0$', text.text, re.M)


def test_cli_replay_through_the_url_prints_the_summary(server: Server, capsys: pytest.CaptureFixture[str]) -> None:
    from service.cli import main

    limit = 400
    code = main(["replay", str(dataset_path("sms_spam.csv")), "--url", server.url, "--api-key", server.operator,
                 "--limit", str(limit), "--batch-size", "100", "--json", "--timeout", "50"])
    out = capsys.readouterr()
    assert code == 0, out.err
    summary = json.loads(out.out.strip().splitlines()[-1])
    assert summary["items"] == limit
    assert summary["auto_labeled"] + summary["human_reviews"] == limit and summary["unlabeled"] == 0
    assert summary["labels_per_item_max"] == 1 and summary["failed"] == 0 and summary["labels"] == 2
    assert summary["overall_accuracy"] >= 0.98  # the oracle's answers and the calibrated auto labels
    auto_right = summary["auto_labeled"] * (summary["auto_precision"] or 0.0)  # None: nothing auto-labeled yet
    assert auto_right / limit - 1e-3 <= summary["agent_accuracy"] <= 1.0  # + its suggestions on escalated items
    assert set(summary["tool_calls"]) == {"rules", "classifier", "retrieval"}
    assert summary["tool_calls"]["rules"] == limit  # cheap tools vote on every item
    project = summary["project"]
    assert summary["policy"] == f"{project}/1" and project.startswith("sms_spam-replay-")
    assert server.store.learning.count_labels(project) == {"agent": summary["auto_labeled"],
                                                  "human": summary["human_reviews"]}
    assert summary["review_submits"] == summary["human_reviews"]


def test_cli_replay_without_a_service_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from service.cli import main
    from service.offline.liveserver import free_port

    data = tmp_path / "tiny.csv"
    data.write_text("text,label\nhello,ham\nwin a prize,spam\n")
    url = f"http://127.0.0.1:{free_port()}"
    policy = str(EXAMPLES_DIR / "sms_spam.yaml")
    assert main(["replay", str(data), "--policy", policy, "--url", url, "--api-key", "la_x", "--json"]) == 2
    assert f"no labelagent service answers at {url}" in capsys.readouterr().err
