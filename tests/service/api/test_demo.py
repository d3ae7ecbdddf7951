"""``/projects/{project}/demo``: a server without the demo says so (and refuses to pause what does not run); with
the demo's simulation (a real :class:`Simulation`, its threads not started) the route reports it, counts answers by
simulated reviewers apart from people's, and pauses/resumes it with one audit entry per change."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from policies import InputError
from service.api.app import create_app
from service.offline.demo.dataset import load_rows
from service.offline.demo.simulation import DemoOptions, Simulation
from service.store import ReviewAnswer, SqlStore
from tests.service.api.conftest import RecordingSink, auth, decide


def test_a_server_without_the_demo_says_it_is_not_running(client: TestClient, project: str) -> None:
    r = client.get(f"/projects/{project}/demo")
    assert r.status_code == 200 and r.json()["running"] is False and r.json()["project"] == project
    r = client.post(f"/projects/{project}/demo/reviewer", json={"paused": True})
    assert r.status_code == 409 and "labelagent demo" in r.json()["error"]["message"]
    assert client.get("/projects/nope/demo").status_code == 404


def answer(store: SqlStore, project: str, reviewer: str) -> None:
    task = store.reviews.claim_review(project, reviewer=reviewer)
    assert task is not None
    store.reviews.submit_reviews([ReviewAnswer(task.task_id, task.token, "spam")], project=project)


def test_the_demo_route_reports_and_pauses_the_simulation(store: SqlStore, project: str, sink: RecordingSink) -> None:
    rows = load_rows()
    sim = Simulation(rows, DemoOptions(project=project, rate=7, review_delay=0.5), ingest_key="unused",
                     reviewer_key="unused", position=42)
    app = create_app(store.settings.model_copy(update={"rate_limit_per_second": 0}), store=store, feedback=sink,
                     demo=sim)
    decide(store, project, ["escalate"] * 3)
    for reviewer in ("simulated-reviewer-1", "simulated-reviewer-2", "ana"):
        answer(store, project, reviewer)
    keys = {role: store.projects.create_key(name=role, role=role, projects=[project])[0]
            for role in ("ingest", "reviewer", "operator")}
    with TestClient(app, raise_server_exceptions=False) as http:
        status = http.get(f"/projects/{project}/demo", headers=auth(keys["ingest"])).json()
        assert status == {"running": True, "project": project, "dataset": status["dataset"], "position": 42,
                          "total": len(rows), "rate_per_second": 7.0, "reviewer": "simulated-reviewer",
                          "reviewer_paused": False, "review_delay_seconds": 0.5, "simulated_answers": 2,
                          "human_answers": 1,
                          "answers_by_reviewer": {"simulated-reviewer-1": 1, "simulated-reviewer-2": 1, "ana": 1}}
        assert "SMS Spam Collection" in status["dataset"] and "CC BY 4.0" in status["dataset"]
        path = f"/projects/{project}/demo/reviewer"
        assert http.post(path, json={"paused": True}, headers=auth(keys["ingest"])).status_code == 403
        for paused in (True, True, False):
            r = http.post(path, json={"paused": paused}, headers=auth(keys["reviewer"]))
            assert r.status_code == 200 and r.json()["reviewer_paused"] is paused
            assert sim.snapshot().reviewer_paused is paused
        assert http.post(path, json={"paused": "later"}, headers=auth(keys["reviewer"])).status_code == 422
        events = http.get(f"/projects/{project}/audit", headers=auth(keys["operator"])).json()["events"]
    demo_events = [(e["action"], e["actor"].split(":", 1)[1]) for e in events if e["action"].startswith("demo.")]
    assert demo_events == [("demo.reviewer_paused", "reviewer"), ("demo.reviewer_resumed", "reviewer")]


def test_another_project_than_the_demos_is_not_the_demo(store: SqlStore, project: str, sink: RecordingSink) -> None:
    sim = Simulation(load_rows(), DemoOptions(project="sms_spam"), ingest_key="k", reviewer_key="k", position=0)
    app = create_app(store.settings, store=store, feedback=sink, demo=sim)
    key = store.projects.create_key(name="op", role="operator")[0]
    with TestClient(app, raise_server_exceptions=False, headers=auth(key)) as http:
        assert http.get(f"/projects/{project}/demo").json()["running"] is False
        assert http.post(f"/projects/{project}/demo/reviewer", json={"paused": True}).status_code == 409


@pytest.mark.parametrize(("field", "value", "says"), [("rate", 0, "--rate"), ("reviewers", 0, "--reviewers"),
                                                      ("review_delay", -1, "--review-delay")])
def test_demo_options_out_of_range_say_which_option(field: str, value: float, says: str) -> None:
    with pytest.raises(InputError, match=says):
        DemoOptions(**{field: value})  # type: ignore[arg-type]
