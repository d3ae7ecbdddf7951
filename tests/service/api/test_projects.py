"""``/projects``: create with a JSON or YAML policy, list, read; bad input names the field to fix."""

from __future__ import annotations

from fastapi.testclient import TestClient

from policies import dumps_policy
from service.store import SqlStore
from tests.factories import make_policy
from tests.service.api.conftest import error_message, policy_json


def test_create_list_and_read(client: TestClient) -> None:
    response = client.post("/projects", json={"name": "spam", "policy": policy_json(make_policy("spam"))})
    assert response.status_code == 201
    created = response.json()
    assert (created["name"], created["active_version"], created["data_kind"]) == ("spam", 1, "text")
    yaml_text = dumps_policy(make_policy("tickets", labels=("billing", "bug", "other")))
    assert client.post("/projects", json={"name": "tickets", "policy": yaml_text}).status_code == 201
    assert [p["name"] for p in client.get("/projects").json()] == ["spam", "tickets"]
    detail = client.get("/projects/tickets").json()
    assert detail["labels"] == ["billing", "bug", "other"]
    assert detail["policy_versions"] == 1


def test_policy_project_defaults_to_the_name(client: TestClient, store: SqlStore) -> None:
    data = policy_json(make_policy("x"))
    del data["project"], data["version"]
    assert client.post("/projects", json={"name": "named", "policy": data}).status_code == 201
    assert store.projects.active_policy("named").key == "named/1"


def test_existing_project_is_a_conflict(client: TestClient) -> None:
    body = {"name": "spam", "policy": policy_json(make_policy("spam"))}
    assert client.post("/projects", json=body).status_code == 201
    response = client.post("/projects", json=body)
    assert response.status_code == 409
    assert error_message(response) == "project 'spam' already exists"


def test_invalid_policy_names_the_field(client: TestClient) -> None:
    data = policy_json(make_policy("spam"))
    response = client.post("/projects", json={"name": "spam", "policy": {**data, "labels": ["only"]}})
    assert response.status_code == 422
    assert response.json()["error"]["type"] == "invalid_policy"
    assert error_message(response) == "labels: a label set needs at least two labels"
    response = client.post("/projects", json={"name": "spam", "policy": {**data, "target_precision": 1.5}})
    assert error_message(response) == "target_precision: target_precision must be strictly between 0 and 1 (got 1.5)"
    response = client.post("/projects", json={"name": "spam", "policy": {**data, "colour": "red"}})
    assert error_message(response) == "colour: unknown field; remove it or check its spelling"
    response = client.post("/projects", json={"name": "spam", "policy": "labels: [a, b"})
    assert error_message(response).startswith("policy: not valid YAML")
    response = client.post("/projects", json={"name": "spam", "policy": "- just\n- a list\n"})
    assert error_message(response) == "policy: expected a mapping of fields, got list"


def test_yaml_aliases_are_refused(client: TestClient) -> None:
    # nine references per level: eight levels would expand to 43 million values while validating and storing
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 8)]
    text = dumps_policy(make_policy("spam")).replace("metadata: {}", "metadata:\n      " + "\n      ".join(levels))
    response = client.post("/projects", json={"name": "spam", "policy": text})
    assert response.status_code == 422
    assert error_message(response).startswith("policy: not valid YAML (aliases (*name) are not allowed in a policy; "
                                              "write the value out")


def test_policy_for_another_project_or_version(client: TestClient) -> None:
    response = client.post("/projects", json={"name": "spam", "policy": policy_json(make_policy("other"))})
    assert response.status_code == 422
    assert error_message(response) == "policy.project is 'other' but the project is 'spam'; make them equal"
    response = client.post("/projects", json={"name": "spam", "policy": policy_json(make_policy("spam", version=3))})
    assert error_message(response) == "policy.version: the first version of a project is 1; omit version or send 1 " \
                                      "(got 3)"


def test_request_validation(client: TestClient) -> None:
    policy = policy_json(make_policy("spam"))
    response = client.post("/projects", json={"name": "Bad Name", "policy": policy})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["body", "name"]
    response = client.post("/projects", json={"name": "spam", "policy": policy, "active_version": 3})
    assert response.status_code == 422
    assert response.json()["detail"][0]["msg"] == "Extra inputs are not permitted"
    response = client.post("/projects", json={"name": "spam"})
    assert response.json()["detail"][0]["loc"] == ["body", "policy"]
    assert response.json()["detail"][0]["msg"] == "Field required"


def test_unknown_project_is_404(client: TestClient) -> None:
    response = client.get("/projects/nope")
    assert response.status_code == 404
    assert response.json() == {"error": {"type": "not_found", "message": "project 'nope' does not exist"}}
