"""Backtests over HTTP: run and stored (candidate against the active version), listed per version newest first with
a cursor, read by id, shown as each version's latest; 404s, roles and the audit entry."""

from __future__ import annotations

from datetime import datetime

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from service.api.deps import get_tool_factory
from service.store import SqlStore
from tests.factories import make_items, make_policy, make_replay_summary
from tests.service.api.conftest import auth, error_message
from tests.service.api.test_policies import new_version
from tests.service.api.tools import keyword_tools


@pytest.fixture
def with_tools(app: FastAPI) -> FastAPI:
    app.dependency_overrides[get_tool_factory] = lambda: keyword_tools
    return app


def test_backtest_compares_candidate_and_active_and_is_stored(with_tools: FastAPI, client: TestClient, project: str,
                                                              store: SqlStore, operator_key: str) -> None:
    items = make_items(300)
    truth = ["spam" if "win" in (it.text or "") else "ham" for it in items]
    store.items.ingest(project, items, labels=truth)
    new_version(client, project, target_precision=0.9, min_calibration=10, audit_rate=0.05)
    before = store.stats(project)
    response = client.post(f"/projects/{project}/policies/2/backtest", json={"limit": 300, "batch_size": 50})
    assert response.status_code == 200, response.text
    body = response.json()
    assert (body["project"], body["ground_truth"]) == (project, 300)
    candidate, active = body["candidate"], body["active"]
    assert (candidate["policy_version"], active["policy_version"]) == (2, 1)
    for figures in (candidate, active):
        assert figures["items"] == 300
        assert figures["auto_labeled"] + figures["human_reviews"] == 300
        lo, hi = figures["auto_precision_ci"]
        if figures["auto_labeled"]:
            assert lo <= figures["auto_precision"] <= hi
            assert figures["auto_rate"] == round(figures["auto_labeled"] / 300, 4)
    assert candidate["auto_labeled"] > 0  # its calibration needs far fewer reviews than the active version's
    assert candidate["auto_precision"] == 1.0  # the keyword voters are right on these items
    assert candidate["overall_accuracy"] == 1.0 and candidate["target_precision"] == 0.9
    assert active["target_precision"] == 0.95
    assert store.stats(project) == before  # nothing reached the live tables

    # stored: read again by id, listed under the version, shown as its latest, logged
    assert body["request"] == {"limit": 300, "batch_size": 50, "seed": 0}
    assert body["requested_by"] == f"{operator_key[3:15]}:tests"
    assert datetime.fromisoformat(body["created_at"]).utcoffset() is not None
    assert client.get(f"/projects/{project}/backtests/{body['id']}").json() == body
    page = client.get(f"/projects/{project}/policies/2/backtests").json()
    assert page == {"backtests": [body], "next_before": None}
    assert client.get(f"/projects/{project}/policies/1/backtests").json() == {"backtests": [], "next_before": None}
    versions = client.get(f"/projects/{project}/policies").json()
    assert [v["latest_backtest"] for v in versions] == [None, body]
    assert client.get(f"/projects/{project}/policies/2").json()["latest_backtest"] == body
    event = client.get(f"/projects/{project}/audit").json()["events"][-1]
    assert (event["action"], event["actor"]) == ("policy.backtested", body["requested_by"])
    assert event["detail"] == {"version": 2, "backtest_id": body["id"], "compared_with": 1, "ground_truth": 300,
                               "limit": 300, "batch_size": 50, "seed": 0}


def test_backtest_bad_input(with_tools: FastAPI, client: TestClient, project: str) -> None:
    url = f"/projects/{project}/policies"
    response = client.post(f"{url}/5/backtest")
    assert (response.status_code, error_message(response)) == (404, "policy version 5 does not exist in this project")
    response = client.post(f"{url}/1/backtest", json={"limit": 0})
    assert response.json()["detail"][0]["msg"] == "Input should be greater than or equal to 1"
    response = client.post(f"{url}/1/backtest", json={"batch_size": 10**9})
    assert response.json()["detail"][0]["msg"] == "Input should be less than or equal to 1000"
    body = client.post(f"{url}/1/backtest").json()  # no ground truth yet: nothing to replay
    assert (body["ground_truth"], body["candidate"]["items"], body["candidate"]["auto_precision"]) == (0, 0, None)
    assert body["active"] == body["candidate"]  # v1 is the active version: compared with itself
    assert body["request"] == {"limit": 2000, "batch_size": 128, "seed": 0}  # the defaults
    assert [b["id"] for b in client.get(f"{url}/1/backtests").json()["backtests"]] == [body["id"]]


def test_backtest_without_tools_is_503(app: FastAPI, client: TestClient, project: str) -> None:
    def unavailable():  # type: ignore[no-untyped-def]
        from policies import AgentError

        raise AgentError("tools cannot be built: tools.registry is not available (test)")

    app.dependency_overrides[get_tool_factory] = unavailable
    response = client.post(f"/projects/{project}/policies/1/backtest")
    assert response.status_code == 503
    assert response.json() == {"error": {"type": "agent_unavailable",
                                         "message": "tools cannot be built: tools.registry is not available (test)"}}


def record(store: SqlStore, project: str, version: int = 1, **summary: object) -> int:
    return store.audit.record_backtest(project, policy_version=version, active_version=1, actor="key:op", limit=100,
                                 batch_size=10, seed=3, ground_truth=80, candidate=make_replay_summary(**summary),
                                 active=make_replay_summary()).id


def test_list_pages_newest_first(client: TestClient, project: str, store: SqlStore) -> None:
    ids = [record(store, project, auto_labeled=10 + i) for i in range(5)]
    url = f"/projects/{project}/policies/1/backtests"
    seen: list[int] = []
    before: int | None = None
    for _ in range(3):
        params = {"limit": 2} | ({} if before is None else {"before": before})
        page = client.get(url, params=params).json()
        seen += [b["id"] for b in page["backtests"]]
        before = page["next_before"]
        if before is None:
            break
    assert seen == ids[::-1]
    assert before is None
    newest = client.get(url).json()["backtests"][0]
    assert (newest["candidate"]["auto_labeled"], newest["candidate"]["auto_rate"]) == (14, 0.14)
    assert (newest["candidate"]["policy_version"], newest["active"]["policy_version"]) == (1, 1)
    assert newest["request"] == {"limit": 100, "batch_size": 10, "seed": 3}
    for params, msg in (({"limit": 0}, "greater than or equal to 1"), ({"limit": 101}, "less than or equal to 100"),
                        ({"before": 0}, "greater than or equal to 1"), ({"before": "x"}, "valid integer")):
        response = client.get(url, params=params)
        assert response.status_code == 422, params
        assert msg in response.json()["detail"][0]["msg"], params


def test_unknown_versions_and_ids_are_404(client: TestClient, project: str, store: SqlStore) -> None:
    store.projects.create_project("other", make_policy("other"))
    theirs = record(store, "other")
    response = client.get(f"/projects/{project}/policies/4/backtests")
    assert (response.status_code, error_message(response)) == (404, "policy version 4 does not exist in this project")
    for missing in (theirs, theirs + 1000):
        response = client.get(f"/projects/{project}/backtests/{missing}")
        assert (response.status_code, error_message(response)) == (
            404, f"backtest {missing} does not exist in project '{project}'")
    response = client.get(f"/projects/nope/backtests/{theirs}")
    assert (response.status_code, error_message(response)) == (404, "project 'nope' does not exist")
    assert client.get(f"/projects/{project}/backtests/0").status_code == 422
    assert client.get(f"/projects/other/backtests/{theirs}").status_code == 200


def test_only_operators_of_the_project_read_backtests(client: TestClient, project: str, store: SqlStore) -> None:
    backtest = record(store, project)
    store.projects.create_project("other", make_policy("other"))
    reviewer = store.projects.create_key(name="r", role="reviewer", projects=[project])[0]
    stranger = store.projects.create_key(name="o", role="operator", projects=["other"])[0]
    for url in (f"/projects/{project}/backtests/{backtest}", f"/projects/{project}/policies/1/backtests"):
        response = client.get(url, headers=auth(reviewer))
        assert response.status_code == 403
        assert error_message(response).startswith("a key of role 'reviewer' may not call GET")
        response = client.get(url, headers=auth(stranger))
        assert (response.status_code, error_message(response)) == (404, f"project '{project}' does not exist")
