"""Policy versions over HTTP: list, create (validated), activate, roll back; and the audit log (backtests:
``test_backtests``)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from policies import dumps_policy
from service.store import SqlStore
from tests.factories import make_policy
from tests.service.api.conftest import RecordingSink, error_message, policy_json


def new_version(client: TestClient, project: str, activate: bool = False, **overrides) -> dict:  # type: ignore[no-untyped-def]
    body = {"policy": policy_json(make_policy(project, **overrides), drop_version=True), "activate": activate}
    response = client.post(f"/projects/{project}/policies", json=body)
    assert response.status_code == 201, response.text
    return response.json()


def test_list_and_create_versions(client: TestClient, project: str, store: SqlStore) -> None:
    created = new_version(client, project, target_precision=0.9)
    assert (created["version"], created["active"]) == (2, False)
    assert created["policy"]["target_precision"] == 0.9
    assert created["policy"]["version"] == 2
    assert store.projects.get_policy(project, 2).target_precision == 0.9
    listed = client.get(f"/projects/{project}/policies").json()
    assert [(p["version"], p["active"]) for p in listed] == [(1, True), (2, False)]
    yaml_text = dumps_policy(make_policy(project, version=3, audit_rate=0.1))
    response = client.post(f"/projects/{project}/policies", json={"policy": yaml_text, "activate": True})
    assert (response.status_code, response.json()["version"], response.json()["active"]) == (201, 3, True)
    assert client.get(f"/projects/{project}/policies/3").json()["policy"]["audit_rate"] == 0.1
    assert store.projects.active_policy(project).version == 3


def test_invalid_versions_name_the_field(client: TestClient, project: str) -> None:
    url = f"/projects/{project}/policies"
    data = policy_json(make_policy(project), drop_version=True)
    response = client.post(url, json={"policy": {**data, "always_review": ["eggs"]}})
    assert response.status_code == 422
    assert error_message(response) == "policy: always_review: 'eggs' is not in labels; add it or remove it"
    response = client.post(url, json={"policy": {**data, "tools": [{"kind": "retrieval", "name": "knn", "k": 0}]}})
    assert error_message(response) == "tools[0].k: Input should be greater than or equal to 1"
    response = client.post(url, json={"policy": {**data, "version": 7}})
    assert error_message(response) == f"policy.version: the next version of project '{project}' is 2; omit version " \
                                      "or send 2"
    response = client.post(url, json={"policy": data, "activate": "sure"})
    assert response.json()["detail"][0]["loc"] == ["body", "activate"]
    response = client.post("/projects/nope/policies", json={"policy": data})
    assert (response.status_code, error_message(response)) == (404, "project 'nope' does not exist")
    response = client.get(f"{url}/9")
    assert (response.status_code, error_message(response)) == (404, "policy version 9 does not exist in this project")


def test_activate_and_roll_back(client: TestClient, project: str, store: SqlStore) -> None:
    url = f"/projects/{project}/policies"
    response = client.post(f"{url}/rollback")
    assert (response.status_code, error_message(response)) == (
        409, f"project '{project}' has no earlier active policy version to roll back to")
    new_version(client, project)
    new_version(client, project)
    response = client.post(f"{url}/2/activate", json={"reason": "try v2"})
    assert response.json() == {"project": project, "active_version": 2, "previous_version": 1}
    assert client.post(f"{url}/3/activate").json() == {"project": project, "active_version": 3, "previous_version": 2}
    assert client.post(f"{url}/rollback").json() == {"project": project, "active_version": 2, "previous_version": 3}
    assert client.post(f"{url}/rollback").json() == {"project": project, "active_version": 1, "previous_version": 2}
    assert store.projects.active_policy(project).version == 1
    assert client.post(f"{url}/rollback").status_code == 409
    response = client.post(f"{url}/8/activate")
    assert (response.status_code, error_message(response)) == (404, "policy version 8 does not exist in this project")
    response = client.post(f"{url}/2/activate", json={"reason": "x", "force": True})
    assert response.json()["detail"][0]["msg"] == "Extra inputs are not permitted"


def test_every_change_is_in_the_audit_log(client: TestClient, operator_key: str) -> None:
    actor = f"{operator_key[3:15]}:tests"  # the key's prefix and name
    client.post("/projects", json={"name": "audited", "policy": policy_json(make_policy("audited"))})
    new_version(client, "audited", activate=True)
    client.post("/projects/audited/policies/rollback", json={"reason": "worse"})
    page = client.get("/projects/audited/audit").json()
    assert [(e["action"], e["actor"]) for e in page["events"]] == [
        ("project.created", actor), ("policy.created", actor), ("policy.activated", actor),
        ("policy.rolled_back", actor)]
    assert page["events"][3]["detail"] == {"from": 2, "to": 1, "reason": "worse"}
    assert page["next_after"] is None
    first = client.get("/projects/audited/audit", params={"limit": 3}).json()
    assert len(first["events"]) == 3
    rest = client.get("/projects/audited/audit", params={"after": first["next_after"]}).json()
    assert [e["action"] for e in rest["events"]] == ["policy.rolled_back"]
    assert client.get("/projects/nope/audit").status_code == 404


def test_changes_wake_the_workers(client: TestClient, sink: RecordingSink) -> None:
    client.post("/projects", json={"name": "woken", "policy": policy_json(make_policy("woken"))})
    item = {"external_id": "a", "data": {"text": "x"}}
    client.post("/projects/woken/items", json={"items": [item]})
    client.post("/projects/woken/items", json={"items": [item]})  # a duplicate: no news
    new_version(client, "woken")  # created, not active: no news for the workers
    client.post("/projects/woken/policies/2/activate")
    client.post("/projects/woken/policies/rollback")
    assert sink.projects == ["woken"] * 4

