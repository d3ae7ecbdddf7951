"""API keys, roles and project scoping: a role-by-route matrix generated from ``app.routes`` (a new route without an
``allow(...)`` declaration fails here), and isolation: another project's objects answer 404 with no side effects."""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from service.api.deps import Allow
from service.store import SqlStore
from service.store.auth_models import ROLES
from tests.factories import make_policy, make_replay_summary
from tests.image_files import png
from tests.service.api.conftest import auth, decide, error_message
from tools.base import Item

PUBLIC = {"/health", "/ui", "/ui/review", "/ui/operator"}  # the web pages hold no data: their API calls send a key
STREAMING = {"/projects/{project}/events"}  # the allowed call would stream forever: checked with a bounded read


@dataclass(frozen=True)
class Call:
    method: str
    template: str
    roles: frozenset[str]


def api_routes(app: FastAPI) -> list[APIRoute]:
    """Every APIRoute of the app, included routers' too (FastAPI versions that include routers lazily wrap them)."""
    try:
        from fastapi.routing import iter_route_contexts  # type: ignore[attr-defined]
    except ImportError:
        return [r for r in app.routes if isinstance(r, APIRoute)]
    return [c.original_route for c in iter_route_contexts(app.routes) if isinstance(c.original_route, APIRoute)]


def declared_calls(app: FastAPI) -> list[Call]:
    calls: list[Call] = []
    for route in api_routes(app):
        allows = [d.call for d in route.dependant.dependencies if isinstance(d.call, Allow)]
        if route.path in PUBLIC:
            assert not allows, f"{route.path} is public and must not ask for a key"
            continue
        assert len(allows) == 1, f"{sorted(route.methods)} {route.path} declares no roles: add dependencies=allow(...)"
        calls.extend(Call(m, route.path, allows[0].roles) for m in sorted(route.methods))
    return calls


@pytest.fixture
def world(store: SqlStore, project: str) -> Iterator[dict[str, object]]:
    """Project ``demo`` with a review task and an item with an image, project ``other``, and keys of every kind."""
    store.projects.create_project("other", make_policy("other"))
    decide(store, project, ["escalate", "accept"])
    store.items.ingest(project, [Item(key="pic/1", image=png())])  # routes of an item (status, thumbnail) answer 200
    task = store.reviews.claim_review(project, reviewer="someone")
    assert task is not None
    scoped = {role: store.projects.create_key(name=f"demo-{role}", role=role, projects=[project])[0] for role in ROLES}
    foreign = {role: store.projects.create_key(name=f"other-{role}", role=role,
                                               projects=["other"])[0] for role in ROLES}
    revoked, record = store.projects.create_key(name="gone", role="operator")
    store.projects.revoke_key(record.prefix)
    stored = store.audit.record_backtest(project, policy_version=1, active_version=1, actor="op", limit=10,
                                         batch_size=5,
                                   seed=0, ground_truth=0, candidate=make_replay_summary(),
                                   active=make_replay_summary())
    yield {"project": project, "task": task, "item": "pic/1", "scoped": scoped, "foreign": foreign,
           "revoked": revoked, "backtest": stored.id}


def url_of(call: Call, world: dict[str, object]) -> str:
    task = world["task"]
    values = {"project": world["project"], "task": task.task_id, "version": 1,  # type: ignore[attr-defined]
              "external_id:path": world["item"], "backtest": world["backtest"]}
    return re.sub(r"\{([^}]+)\}", lambda m: str(values[m.group(1)]), call.template)


def body_of(call: Call, world: dict[str, object]) -> dict[str, object] | None:
    """A valid body, so that a call refused for isolation would have changed something had it been let through."""
    if call.method != "POST":
        return None
    token = world["task"].token  # type: ignore[attr-defined]
    path = call.template
    if path == "/projects":
        return {"name": "created", "policy": make_policy("created").model_dump(mode="json")}
    if path.endswith("/items"):
        return {"items": [{"external_id": "intruder", "data": {"text": "hello"}}]}
    if path.endswith("/claim"):
        return {"reviewer": "intruder"}
    if "/reviews/{task}" in path:
        return {"lease_token": token, "label": "ham"}
    if path.endswith("/policies"):
        return {"policy": make_policy("demo", version=2).model_dump(mode="json"), "activate": True}
    if path.endswith("/backtest"):
        return {"limit": 1}
    return {}


def snapshot(store: SqlStore) -> tuple[object, ...]:
    out: list[object] = [[p.name for p in store.projects.list_projects()]]
    for name in ("demo", "other"):
        out += [store.items.count_items(name), store.reviews.count_tasks(name),
                len(store.projects.list_policy_versions(name)),
                store.projects.get_project(name).active_version, store.learning.count_labels(name),
                len(store.audit.list_backtests(name, 1, limit=1000)), len(store.audit.list_audit(name, limit=1000))]
    return tuple(out)


def test_every_route_declares_its_roles_and_operators_may_call_all(app: FastAPI) -> None:
    calls = declared_calls(app)
    assert len(calls) >= 20
    for call in calls:
        assert call.roles <= set(ROLES) and "operator" in call.roles, call


def test_role_by_route_matrix(app: FastAPI, store: SqlStore, world: dict[str, object]) -> None:
    """For every route: no key, a malformed, unknown or revoked key -> 401; a role not allowed -> 403; an allowed role
    scoped to another project -> 404 (like a missing project); nothing of any project changes along the way."""
    before = snapshot(store)
    client = TestClient(app, raise_server_exceptions=False)
    scoped, foreign = world["scoped"], world["foreign"]
    unknown = "la_000000000000_" + "x" * 43
    for call in declared_calls(app):
        url, body = url_of(call, world), body_of(call, world)
        where = f"{call.method} {call.template}"

        def send(headers: dict[str, str], url: str = url, body: object = body, call: Call = call):  # type: ignore[no-untyped-def]
            return client.request(call.method, url, json=body, headers=headers)

        for headers in ({}, {"X-API-Key": "nonsense"}, auth(unknown), auth(str(world["revoked"]))):
            response = send(headers)
            assert response.status_code == 401, (where, headers, response.text)
            assert response.headers["WWW-Authenticate"] == "Bearer"
        assert error_message(send({})) == ("an API key is required: send 'Authorization: Bearer <key>' or "
                                           "'X-API-Key: <key>'")
        assert error_message(send(auth(unknown))) == "the API key is unknown or revoked"
        for role in set(ROLES) - call.roles:
            response = send(auth(scoped[role]))  # type: ignore[index]
            assert response.status_code == 403, (where, role, response.text)
            assert error_message(response).startswith(f"a key of role {role!r} may not call {call.method} "), where
        if "{project}" in call.template or "{task}" in call.template:
            for role in call.roles:
                response = send(auth(foreign[role]))  # type: ignore[index]
                assert response.status_code == 404, (where, role, response.text)
                assert error_message(response) in (f"project {world['project']!r} does not exist",
                                                   f"review task {world['task'].task_id} does not exist")  # type: ignore[attr-defined]
    assert snapshot(store) == before
    # allowed: every role the route declares, with a key of the project, gets past authentication and roles
    for call in declared_calls(app):
        if call.template in STREAMING or call.method != "GET":
            continue
        for role in call.roles:
            response = client.request(call.method, url_of(call, world), headers=auth(scoped[role]))  # type: ignore[index]
            assert response.status_code == 200, (call, role, response.text)


def test_keys_scoped_to_a_project_see_only_it(client: TestClient, store: SqlStore, project: str) -> None:
    store.projects.create_project("other", make_policy("other"))
    reviewer = store.projects.create_key(name="r", role="reviewer", projects=["other"])[0]
    names = [p["name"] for p in client.get("/projects", headers=auth(reviewer)).json()]
    assert names == ["other"]
    operator = store.projects.create_key(name="o", role="operator", projects=["other"])[0]
    response = client.post("/projects", headers=auth(operator),
                           json={"name": "third", "policy": make_policy("third").model_dump(mode="json")})
    assert (response.status_code, error_message(response)) == (
        403, "this key is scoped to other projects; it may not create project 'third'")
    metrics = client.get("/metrics", headers=auth(operator)).text
    assert 'project="other"' in metrics and f'project="{project}"' not in metrics


def test_both_headers_must_agree(client: TestClient, store: SqlStore, operator_key: str) -> None:
    other = store.projects.create_key(name="x", role="operator")[0]
    response = client.get("/projects", headers={"Authorization": f"Bearer {other}", "X-API-Key": operator_key})
    assert (response.status_code, error_message(response)) == (
        401, "'Authorization' and 'X-API-Key' carry different keys; send one key")
    assert client.get("/projects", headers={"X-API-Key": operator_key, "Authorization": ""}).status_code == 200


def test_keys_are_stored_hashed_and_revocation_is_immediate(client: TestClient, store: SqlStore) -> None:
    key, record = store.projects.create_key(name="ci", role="ingest")
    assert key.startswith(f"la_{record.prefix}_")
    assert all(key not in str(r.model_dump()) for r in store.projects.list_keys())
    assert client.get("/projects", headers=auth(key)).status_code == 200
    store.projects.revoke_key(record.prefix)
    response = client.get("/projects", headers=auth(key))
    assert (response.status_code, error_message(response)) == (401, "the API key is unknown or revoked")


def test_health_needs_no_key(anonymous: TestClient) -> None:
    assert anonymous.get("/health").status_code == 200
