"""``/projects/{project}/items``: idempotent ingest, item status with evidence, re-queueing failed items."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient

from service.settings import Settings
from service.store import SqlStore
from service.store.items import lease_expired_reason
from service.store.tables import utcnow
from tests.service.api.conftest import decide, error_message


def items(*keys: str, label: str | None = None) -> list[dict]:
    out = []
    for key in keys:
        item: dict = {"external_id": key, "data": {"text": f"text of {key}", "metadata": {"n": 1}}}
        if label is not None:
            item["label"] = label
        out.append(item)
    return out


def test_ingest_is_idempotent(client: TestClient, project: str, store: SqlStore) -> None:
    response = client.post(f"/projects/{project}/items", json={"items": items("a", "b", "a")})
    assert response.status_code == 200
    assert response.json() == {"inserted": ["a", "b"], "duplicates": ["a"]}
    response = client.post(f"/projects/{project}/items", json={"items": items("b", "c")})
    assert response.json() == {"inserted": ["c"], "duplicates": ["b"]}
    assert store.items.count_items(project)["pending"] == 3
    stored = store.items.item_view(project, "a").item
    assert (stored.text, stored.meta) == ("text of a", {"n": 1})


def test_client_labels_are_kept_and_checked(client: TestClient, project: str, store: SqlStore) -> None:
    response = client.post(f"/projects/{project}/items", json={"items": items("a", label="spam")})
    assert response.status_code == 200
    assert store.items.item_view(project, "a").item.client_label == "spam"
    response = client.post(f"/projects/{project}/items", json={"items": items("b", label="eggs")})
    assert response.status_code == 422
    assert error_message(response) == "client label 'eggs' is not in the project's labels ['ham', 'spam']"


def test_batch_limit(store: SqlStore, project: str, operator_key: str) -> None:
    from fastapi.testclient import TestClient as Client

    from service.api.app import create_app

    small = SqlStore(store.engine, Settings(max_batch_items=2))
    with Client(create_app(store=small), headers={"X-API-Key": operator_key}) as client:
        response = client.post(f"/projects/{project}/items", json={"items": items("a", "b", "c")})
    assert response.status_code == 422
    assert error_message(response) == "3 items in one call; send at most 2 per call"


def test_bad_items_are_rejected_with_the_field(client: TestClient, project: str) -> None:
    url = f"/projects/{project}/items"
    cases = [
        ({"items": []}, ["body", "items"], "List should have at least 1 item after validation, not 0"),
        ({"items": [{"external_id": "a", "data": {}}]}, ["body", "items", 0, "data"],
         "Value error, give text, metadata, an image (image_base64 or image_url) or several of these"),
        ({"items": [{"external_id": "", "data": {"text": "x"}}]}, ["body", "items", 0, "external_id"],
         "String should have at least 1 character"),
        ({"items": [{"external_id": "a\u0000b", "data": {"text": "x"}}]}, ["body", "items", 0, "external_id"],
         "Value error, must not contain NUL (\\u0000) characters"),
        ({"items": [{"external_id": "a", "data": {"text": "x", "status": "labeled"}}]},
         ["body", "items", 0, "data", "status"], "Extra inputs are not permitted"),
        ({"items": [{"external_id": "a", "data": {"metadata": {"deep": {"x": "\u0000"}}}}]},
         ["body", "items", 0, "data", "metadata"], "Value error, must not contain NUL (\\u0000) characters"),
        ({"items": [{"external_id": "a" * 257, "data": {"text": "x"}}]}, ["body", "items", 0, "external_id"],
         "String should have at most 256 characters"),
        ({"items": [{"external_id": 5, "data": {"text": "x"}}]}, ["body", "items", 0, "external_id"],
         "Input should be a valid string"),
    ]
    for body, loc, msg in cases:
        response = client.post(url, json=body)
        assert response.status_code == 422, body
        detail = response.json()["detail"][0]
        assert (detail["loc"], detail["msg"]) == (loc, msg), body
    response = client.post(url, content=b'{"items": [{"external_id": "a", "data": {"metadata": {"x": NaN}}}]}',
                           headers={"content-type": "application/json"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["msg"] == ("Value error, holds NaN or Infinity, which JSON cannot carry; "
                                                   "send null or a number")


def test_item_status_and_evidence(client: TestClient, project: str, store: SqlStore) -> None:
    keys = decide(store, project, ["accept", "escalate", "audit"])
    client.post(f"/projects/{project}/items", json={"items": items("waiting/with/slashes")})
    labeled = client.get(f"/projects/{project}/items/{keys[0]}").json()
    assert labeled["status"] == "labeled"
    assert (labeled["label"], labeled["source"], labeled["policy_version"], labeled["threshold"]) == (
        "ham", "agent", 1, 0.9)
    assert labeled["confidence"] == 0.5
    assert [v["tool"] for v in labeled["evidence"]] == ["rules", "random", "clf"]
    assert labeled["evidence"][1] == {"tool": "random", "distribution": {"ham": 0.8, "spam": 0.2}, "cost": 1.0,
                                      "evidence": "random says ham", "model_version": "random-v1"}
    escalated = client.get(f"/projects/{project}/items/{keys[1]}").json()
    assert (escalated["status"], escalated["label"], escalated["source"]) == ("in_review", None, None)
    assert len(escalated["evidence"]) == 3
    audited = client.get(f"/projects/{project}/items/{keys[2]}").json()
    assert (audited["status"], audited["evidence"]) == ("in_review", [])  # hidden while the audit is open
    waiting = client.get(f"/projects/{project}/items/waiting/with/slashes").json()
    assert (waiting["status"], waiting["evidence"], waiting["policy_version"]) == ("pending", [], None)


def test_leased_items_are_pending_for_clients(client: TestClient, project: str, store: SqlStore) -> None:
    client.post(f"/projects/{project}/items", json={"items": items("a")})
    store.items.claim_batch(project, worker="w")
    assert store.items.item_view(project, "a").item.status == "leased"
    assert client.get(f"/projects/{project}/items/a").json()["status"] == "pending"


def test_unknown_item_and_project(client: TestClient, project: str) -> None:
    response = client.get(f"/projects/{project}/items/nope")
    assert response.status_code == 404
    assert error_message(response) == f"item 'nope' does not exist in project '{project}'"
    response = client.post("/projects/nope/items", json={"items": items("a")})
    assert response.status_code == 404
    assert error_message(response) == "project 'nope' does not exist"


def test_requeue_failed_items(client: TestClient, project: str, store: SqlStore) -> None:
    client.post(f"/projects/{project}/items", json={"items": items("a", "b", "c")})
    t0 = utcnow()
    for attempt in range(store.settings.max_attempts + 1):  # every claim's lease expires: the items fail
        store.items.claim_batch(project, worker="w", lease_seconds=1, now=t0 + timedelta(seconds=10 * attempt))
    assert store.items.count_items(project)["failed"] == 3
    response = client.post(f"/projects/{project}/items/requeue", json={"external_ids": ["a", "zzz"]})
    assert response.json() == {"requeued": ["a"], "unchanged": ["zzz"]}
    assert client.get(f"/projects/{project}/items/a").json()["status"] == "pending"
    assert store.items.item_view(project, "a").item.attempts == 0
    response = client.post(f"/projects/{project}/items/requeue", json={})
    assert sorted(response.json()["requeued"]) == ["b", "c"]
    events = client.get(f"/projects/{project}/audit").json()["events"]
    assert [(e["action"], e["detail"]["count"]) for e in events] == [("items.requeued", 1), ("items.requeued", 2)]


def test_items_are_listed_by_status_a_page_at_a_time(client: TestClient, project: str, store: SqlStore) -> None:
    keys = decide(store, project, ["accept", "escalate", "accept"])  # labeled, in review, labeled
    client.post(f"/projects/{project}/items", json={"items": items("p1", "p2", "p3", label="spam")})
    store.items.claim_batch(project, worker="w", size=1)  # p1 leased: still pending for clients
    url = f"/projects/{project}/items"
    everything = client.get(url).json()
    assert [i["external_id"] for i in everything["items"]] == [*keys, "p1", "p2", "p3"]  # arrival order
    assert everything["next_after"] is None
    first = everything["items"][0]
    assert (first["status"], first["label"], first["source"], first["policy_version"]) == ("labeled", "ham", "agent", 1)
    assert everything["items"][3]["client_label"] == "spam"

    labeled = client.get(url, params={"status": "labeled"}).json()["items"]
    assert [i["external_id"] for i in labeled] == [keys[0], keys[2]]
    waiting = client.get(url, params=[("status", "pending"), ("status", "in_review")]).json()["items"]
    assert [(i["external_id"], i["status"]) for i in waiting] == [
        (keys[1], "in_review"), ("p1", "pending"), ("p2", "pending"), ("p3", "pending")]

    pages, after = [], 0
    while True:
        page = client.get(url, params={"limit": 2, "after": after}).json()
        pages.append([i["external_id"] for i in page["items"]])
        if page["next_after"] is None:
            break
        after = page["next_after"]
    assert pages == [[keys[0], keys[1]], [keys[2], "p1"], ["p2", "p3"]]


def test_failed_items_are_listed_with_their_errors(client: TestClient, project: str, store: SqlStore) -> None:
    client.post(f"/projects/{project}/items", json={"items": items("a", "b")})
    t0 = utcnow()
    for attempt in range(store.settings.max_attempts + 1):  # every claim's lease expires: the items fail
        store.items.claim_batch(project, worker="w", lease_seconds=1, now=t0 + timedelta(seconds=10 * attempt))
    failed = client.get(f"/projects/{project}/items", params={"status": "failed"}).json()["items"]
    assert [(i["external_id"], i["status"]) for i in failed] == [("a", "failed"), ("b", "failed")]
    assert {i["error"] for i in failed} == {lease_expired_reason(store.settings.max_attempts)}
    assert client.get(f"/projects/{project}/items/a").json()["error"] == failed[0]["error"]
    assert client.get(f"/projects/{project}/items", params={"status": "labeled"}).json() == {
        "items": [], "next_after": None}


def test_item_listing_rejects_bad_parameters(client: TestClient, project: str) -> None:
    url = f"/projects/{project}/items"
    for params, field in [({"status": "leased"}, "status"), ({"limit": 0}, "limit"), ({"limit": 1001}, "limit"),
                          ({"after": -1}, "after")]:
        response = client.get(url, params=params)
        assert response.status_code == 422, params
        assert response.json()["detail"][0]["loc"][-1] in (field, 0), params
    response = client.get("/projects/nope/items")
    assert response.status_code == 404
    assert error_message(response) == "project 'nope' does not exist"
