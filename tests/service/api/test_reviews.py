"""The review queue over HTTP: claims by priority, audits hide the agent, leases, submit, skip, release, listing."""

from __future__ import annotations

from datetime import timedelta

from fastapi.testclient import TestClient

from service.store import SqlStore
from service.store.tables import utcnow
from tests.factories import make_policy
from tests.service.api.conftest import RecordingSink, auth, decide, error_message


def claim(client: TestClient, project: str, reviewer: str) -> dict:
    response = client.post(f"/projects/{project}/reviews/claim", json={"reviewer": reviewer})
    assert response.status_code == 200, response.text
    return response.json()


def test_claim_shows_the_agent_view_except_for_audits(client: TestClient, project: str, store: SqlStore) -> None:
    # make_batch_result gives priority i % 7: the audit (i=2) comes before the escalation (i=1)
    keys = decide(store, project, ["accept", "escalate", "audit"])
    audit = claim(client, project, "alice")
    assert (audit["kind"], audit["item"]["external_id"]) == ("audit", keys[2])
    assert (audit["suggestion"], audit["confidence"], audit["evidence"]) == (None, None, None)
    assert audit["labels"] == ["ham", "spam"]
    assert "spam" not in str(audit["item"])  # nothing of the agent's label leaks through the item
    escalation = claim(client, project, "alice")
    assert (escalation["kind"], escalation["item"]["external_id"]) == ("escalation", keys[1])
    assert escalation["suggestion"] == "spam"
    assert escalation["confidence"] == 0.51
    assert [v["tool"] for v in escalation["evidence"]] == ["rules", "random", "clf"]
    assert escalation["evidence"][0]["distribution"] is None  # the rules abstained on this one
    assert escalation["item"] == {"external_id": keys[1], "text": "hello 1", "metadata": {"i": 1, "source": "test"},
                                 "thumbnail_url": None}
    assert escalation["lease_token"] and escalation["lease_expires_at"]
    response = client.post(f"/projects/{project}/reviews/claim", json={"reviewer": "alice"})
    assert (response.status_code, response.content) == (204, b"")


def test_submit_settles_the_item_and_notifies(client: TestClient, project: str, store: SqlStore,
                                               sink: RecordingSink) -> None:
    keys = decide(store, project, ["escalate"])
    task = claim(client, project, "alice")
    response = client.post(f"/reviews/{task['task_id']}/submit", json={"lease_token": task["lease_token"],
                                                                        "label": "ham"})
    assert response.status_code == 200
    assert response.json() == {"task_id": task["task_id"], "external_id": keys[0], "label": "ham", "settled": True,
                               "final_label": "ham"}
    assert sink.projects == [project]
    item = client.get(f"/projects/{project}/items/{keys[0]}").json()
    assert (item["status"], item["label"], item["source"]) == ("labeled", "ham", "human")
    response = client.post(f"/reviews/{task['task_id']}/submit", json={"lease_token": task["lease_token"],
                                                                        "label": "ham"})
    assert response.status_code == 409  # answered already: the token no longer holds the task


def test_overlap_waits_for_a_second_reviewer(client: TestClient, store: SqlStore) -> None:
    store.projects.create_project("dup", make_policy("dup", overlap=2, max_overlap=2))
    decide(store, "dup", ["escalate"])
    first = claim(client, "dup", "alice")
    body = client.post(f"/reviews/{first['task_id']}/submit", json={"lease_token": first["lease_token"],
                                                                     "label": "spam"}).json()
    assert (body["settled"], body["final_label"]) == (False, None)
    assert client.post("/projects/dup/reviews/claim", json={"reviewer": "alice"}).status_code == 204
    second = claim(client, "dup", "bob")
    body = client.post(f"/reviews/{second['task_id']}/submit", json={"lease_token": second["lease_token"],
                                                                      "label": "spam"}).json()
    assert (body["settled"], body["final_label"]) == (True, "spam")


def test_stale_and_foreign_tokens_are_conflicts(client: TestClient, project: str, store: SqlStore) -> None:
    decide(store, project, ["escalate"])
    task = claim(client, project, "alice")
    url = f"/reviews/{task['task_id']}"
    stale = "review task {}: the lease token is stale or not yours; claim again".format(task["task_id"])
    response = client.post(f"{url}/submit", json={"lease_token": "someone-elses", "label": "ham"})
    assert (response.status_code, error_message(response)) == (409, stale)
    # alice's lease runs out and bob takes the task: her token is stale for every call
    bob = store.reviews.claim_review(project, reviewer="bob", now=utcnow() + timedelta(days=1))
    assert bob is not None and bob.task_id == task["task_id"]
    for action, extra in (("submit", {"label": "ham"}), ("heartbeat", {}), ("skip", {}), ("release", {})):
        response = client.post(f"{url}/{action}", json={"lease_token": task["lease_token"], **extra})
        assert (response.status_code, error_message(response)) == (409, stale), action
    assert store.reviews.count_tasks(project) == {"open": 0, "claimed": 1, "done": 0}


def test_bad_label_unknown_task_and_bad_bodies(client: TestClient, project: str, store: SqlStore) -> None:
    decide(store, project, ["escalate"])
    task = claim(client, project, "alice")
    url = f"/reviews/{task['task_id']}"
    response = client.post(f"{url}/submit", json={"lease_token": task["lease_token"], "label": "eggs"})
    assert response.status_code == 422
    assert error_message(response) == f"review task {task['task_id']}: label 'eggs' is not one of ['ham', 'spam']"
    response = client.post("/reviews/999999/submit", json={"lease_token": task["lease_token"], "label": "ham"})
    assert (response.status_code, error_message(response)) == (404, "review task 999999 does not exist")
    response = client.post("/reviews/999999/heartbeat", json={"lease_token": "abc"})
    assert (response.status_code, error_message(response)) == (404, "review task 999999 does not exist")
    response = client.post(f"{url}/submit", json={"lease_token": task["lease_token"]})
    assert response.json()["detail"][0]["loc"] == ["body", "label"]
    response = client.post(f"{url}/submit", json={"lease_token": task["lease_token"], "label": "ham", "x": 1})
    assert response.json()["detail"][0]["msg"] == "Extra inputs are not permitted"
    response = client.post(f"/projects/{project}/reviews/claim", json={"reviewer": ""})
    assert response.json()["detail"][0]["msg"] == "String should have at least 1 character"
    response = client.post("/reviews/0/submit", json={"lease_token": "a", "label": "ham"})
    assert response.status_code == 422 and response.json()["detail"][0]["loc"] == ["path", "task"]
    response = client.post("/projects/nope/reviews/claim", json={"reviewer": "alice"})
    assert (response.status_code, error_message(response)) == (404, "project 'nope' does not exist")


def test_heartbeat_extends_the_lease(client: TestClient, project: str, store: SqlStore) -> None:
    decide(store, project, ["escalate"])
    task = claim(client, project, "alice")
    response = client.post(f"/reviews/{task['task_id']}/heartbeat", json={"lease_token": task["lease_token"]})
    assert response.status_code == 200
    assert response.json()["lease_expires_at"] >= task["lease_expires_at"]


def test_skip_passes_the_task_to_someone_else(client: TestClient, project: str, store: SqlStore) -> None:
    keys = decide(store, project, ["escalate", "escalate"])  # priorities 0 and 1: keys[1] first
    first = claim(client, project, "alice")
    assert first["item"]["external_id"] == keys[1]
    response = client.post(f"/reviews/{first['task_id']}/skip", json={"lease_token": first["lease_token"],
                                                                       "seconds": 600})
    assert response.status_code == 200
    assert response.json()["status"] == "open"
    again = claim(client, project, "alice")
    assert again["item"]["external_id"] == keys[0]  # not the skipped one
    assert claim(client, project, "bob")["item"]["external_id"] == keys[1]
    later = store.reviews.claim_review(project, reviewer="alice", now=utcnow() + timedelta(hours=2))
    assert later is not None and later.item.key == keys[1]  # the skip wore off (bob's lease expired meanwhile)


def test_release_returns_the_task(client: TestClient, project: str, store: SqlStore) -> None:
    decide(store, project, ["escalate"])
    task = claim(client, project, "alice")
    response = client.post(f"/reviews/{task['task_id']}/release", json={"lease_token": task["lease_token"]})
    assert response.json() == {"task_id": task["task_id"], "status": "open"}
    assert store.reviews.count_tasks(project)["open"] == 1
    assert claim(client, project, "alice")["task_id"] == task["task_id"]  # released, not skipped: offered again


def test_operators_list_the_queue(client: TestClient, project: str, store: SqlStore) -> None:
    keys = decide(store, project, ["escalate", "audit", "escalate", "accept", "escalate"])
    claim(client, project, "alice")
    page = client.get(f"/projects/{project}/reviews", params={"limit": 2}).json()
    assert (page["total"], page["offset"], page["limit"]) == (4, 0, 2)
    assert [t["external_id"] for t in page["tasks"]] == [keys[4], keys[2]]  # by priority
    assert page["tasks"][0]["status"] == "claimed" and page["tasks"][0]["reviewer"] == "alice"
    assert "lease_token" not in page["tasks"][0]
    rest = client.get(f"/projects/{project}/reviews", params={"limit": 2, "offset": 2}).json()
    assert [t["external_id"] for t in rest["tasks"]] == [keys[1], keys[0]]
    audits = client.get(f"/projects/{project}/reviews", params={"kind": "audit"}).json()
    assert [t["external_id"] for t in audits["tasks"]] == [keys[1]]
    open_ = client.get(f"/projects/{project}/reviews", params={"status": "open"}).json()
    assert open_["total"] == 3
    response = client.get(f"/projects/{project}/reviews", params={"status": "lost"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["msg"] == "Input should be 'open', 'claimed' or 'done'"


class BrokenSink:
    def notify(self, project: str) -> None:
        raise RuntimeError("the runtime is gone")


def test_a_failing_feedback_sink_does_not_fail_the_answer(store: SqlStore, project: str, operator_key: str) -> None:
    from service.api.app import create_app

    decide(store, project, ["escalate"])
    with TestClient(create_app(store=store, feedback=BrokenSink()), headers=auth(operator_key)) as client:
        task = claim(client, project, "alice")
        response = client.post(f"/reviews/{task['task_id']}/submit", json={"lease_token": task["lease_token"],
                                                                            "label": "spam"})
    assert response.status_code == 200
    assert store.reviews.count_tasks(project)["done"] == 1



def test_cold_start_reviews_are_blind_like_audits(client: TestClient, project: str, store: SqlStore) -> None:
    # Cold-start answers enter the calibration set: the reviewer must not see the agent's label, confidence or votes.
    from tests.factories import make_batch_result, make_items

    items = make_items(1, prefix="cold")
    store.items.ingest(project, items)
    token, claimed = store.items.claim_batch(project, worker="test", size=1)
    result = make_batch_result(store.projects.active_policy(project), claimed, ["escalate"], threshold=None)
    result.decisions[0].review_kind = "cold_start"
    store.items.record_batch(project, result, token)
    task = claim(client, project, "alice")
    assert task["kind"] == "cold_start"
    assert (task["suggestion"], task["confidence"], task["evidence"]) == (None, None, None)
    status = client.get(f"/projects/{project}/items/{items[0].key}").json()
    assert (status["status"], status["evidence"]) == ("in_review", [])
