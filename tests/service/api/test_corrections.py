"""Correcting a label after the fact: ``POST /projects/{p}/items/{id}/correction`` on SQLite and PostgreSQL. The
label is replaced by a human label with a new id (history kept in ``label_correction`` and the audit log), the
export and the event stream deliver it after an earlier cursor, the answer feed hands it to the learner marked as a
correction, metrics count it, and sending it twice writes it once."""

from __future__ import annotations

import json

from fastapi.testclient import TestClient
from sqlalchemy import func, select

from service.api.ops.labels import decode_cursor
from service.runtime.feedback import AnswerFeed
from service.store import ReviewAnswer, SqlStore
from service.store.base import correction_t, item_t, label_t
from service.store.db import read_tx
from tests.service.api.conftest import RecordingSink, auth, decide, error_message
from tests.service.api.test_labels import read_events


def url(project: str, key: str) -> str:
    return f"/projects/{project}/items/{key}/correction"


def current_label(store: SqlStore, project: str, key: str) -> tuple[int, str, str]:
    view = store.items.item_view(project, key)
    assert view.label is not None
    return view.label.id, view.label.label, view.label.source


def labels_of(store: SqlStore, key: str) -> int:
    with read_tx(store.engine) as conn:
        return conn.execute(select(func.count()).select_from(label_t.join(item_t, item_t.c.id == label_t.c.item_id))
                            .where(item_t.c.external_id == key)).scalar_one()


def human_labeled(store: SqlStore, project: str) -> str:
    """An item escalated by the agent and settled by a reviewer as ham (a human label); open tasks are settled too."""
    key = decide(store, project, ["escalate"], start=500)[0]
    tasks = store.reviews.claim_reviews(project, reviewer="ana", limit=100)
    store.reviews.submit_reviews([ReviewAnswer(t.task_id, t.token, "ham") for t in tasks], project=project)
    return key


def test_correct_an_auto_label(client: TestClient, store: SqlStore, project: str, sink: RecordingSink) -> None:
    key = decide(store, project, ["accept"])[0]  # the agent says ham (labels alternate from ham)
    old_id, old_label, old_source = current_label(store, project, key)
    assert (old_label, old_source) == ("ham", "agent")
    before = client.get(f"/projects/{project}/items/{key}").json()
    sink.projects.clear()
    response = client.post(url(project, key), json={"label": "spam", "reviewer": "bob", "note": "a prize scam"})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["changed"] is True
    assert (body["label"], body["source"], body["confidence"], body["status"]) == ("spam", "human", 1.0, "labeled")
    assert body["corrected_from"]["label_id"] == old_id
    assert {k: body["corrected_from"][k] for k in ("label", "source", "confidence", "reviewer", "note")} == {
        "label": "ham", "source": "agent", "confidence": before["confidence"], "reviewer": "bob",
        "note": "a prize scam"}
    assert body["evidence"] == before["evidence"], "the agent's votes stay as evidence"
    new_id, label, source = current_label(store, project, key)
    assert new_id > old_id and (label, source) == ("spam", "human")
    assert labels_of(store, key) == 1, "one label per item and policy version"
    status = client.get(f"/projects/{project}/items/{key}").json()
    assert status["label"] == "spam" and status["corrected_from"]["label"] == "ham"
    assert sink.projects == [project], "the workers are woken to learn from it"
    history = store.audit.corrections_of(project, key)
    assert [(c.replaced_label_id, c.replaced_label, c.replaced_source, c.label_id, c.label) for c in history] == [
        (old_id, "ham", "agent", new_id, "spam")]


def test_correct_a_human_label_and_correct_again(client: TestClient, store: SqlStore, project: str) -> None:
    key = human_labeled(store, project)
    first_id, _, source = current_label(store, project, key)
    assert source == "human"
    body = client.post(url(project, key), json={"label": "spam", "reviewer": "carla"}).json()
    assert (body["label"], body["changed"], body["corrected_from"]["source"]) == ("spam", True, "human")
    assert body["corrected_from"]["note"] is None
    second_id = current_label(store, project, key)[0]
    body = client.post(url(project, key), json={"label": "ham", "reviewer": "dan"}).json()
    assert (body["label"], body["corrected_from"]["label"], body["corrected_from"]["label_id"]) == (
        "ham", "spam", second_id)
    history = store.audit.corrections_of(project, key)
    assert [(c.replaced_label_id, c.label) for c in history] == [(first_id, "spam"), (second_id, "ham")]
    assert client.get(f"/projects/{project}/metrics").json()["corrections"] == {"agent": 0, "human": 2}


def test_correcting_to_the_same_label_twice_writes_once(client: TestClient, store: SqlStore, project: str,
                                                        sink: RecordingSink) -> None:
    key = decide(store, project, ["accept"])[0]
    first = client.post(url(project, key), json={"label": "spam", "reviewer": "bob"})
    label_id = current_label(store, project, key)[0]
    sink.projects.clear()
    again = client.post(url(project, key), json={"label": "spam", "reviewer": "bob"})
    assert (first.status_code, again.status_code) == (200, 200)
    assert again.json()["changed"] is False
    assert {k: v for k, v in again.json().items() if k != "changed"} == {
        k: v for k, v in first.json().items() if k != "changed"}
    assert current_label(store, project, key)[0] == label_id, "no new label record"
    assert len(store.audit.corrections_of(project, key)) == 1
    assert [e["action"] for e in client.get(f"/projects/{project}/audit").json()["events"]].count(
        "label.corrected") == 1
    assert sink.projects == []
    # the agent's own label "corrected" to itself is no correction either
    other = decide(store, project, ["accept"], start=10)[0]
    same = client.post(url(project, other), json={"label": "ham", "reviewer": "bob"}).json()
    assert (same["changed"], same["source"], same["corrected_from"]) == (False, "agent", None)


def test_the_audit_log_keeps_before_and_after(client: TestClient, store: SqlStore, project: str,
                                              operator_key: str) -> None:
    key = decide(store, project, ["accept"])[0]
    old_id, _, _ = current_label(store, project, key)
    confidence = client.get(f"/projects/{project}/items/{key}").json()["confidence"]
    client.post(url(project, key), json={"label": "spam", "reviewer": "bob", "note": "scam"})
    new_id = current_label(store, project, key)[0]
    events = [e for e in client.get(f"/projects/{project}/audit").json()["events"] if e["action"] == "label.corrected"]
    assert len(events) == 1
    assert events[0]["actor"] == f"{operator_key[3:15]}:tests"
    assert events[0]["detail"] == {
        "external_id": key, "policy_version": 1, "reviewer": "bob", "note": "scam",
        "before": {"label_id": old_id, "label": "ham", "source": "agent", "confidence": confidence},
        "after": {"label_id": new_id, "label": "spam", "source": "human", "confidence": 1.0},
    }


def test_unknown_unlabeled_and_bad_requests(client: TestClient, store: SqlStore, project: str) -> None:
    response = client.post(url(project, "nope"), json={"label": "spam", "reviewer": "bob"})
    assert (response.status_code, error_message(response)) == (404, f"item 'nope' does not exist in project "
                                                                    f"'{project}'")
    assert client.post(url("nope", "x"), json={"label": "spam", "reviewer": "bob"}).status_code == 404
    escalated = decide(store, project, ["escalate"])[0]
    response = client.post(url(project, escalated), json={"label": "spam", "reviewer": "bob"})
    assert response.status_code == 409
    assert "answer its review task instead" in error_message(response)
    key = decide(store, project, ["accept"], start=20)[0]
    client.post(f"/projects/{project}/items", json={"items": [{"external_id": "new", "data": {"text": "hi"}}]})
    response = client.post(url(project, "new"), json={"label": "spam", "reviewer": "bob"})
    assert response.status_code == 409 and "waiting for the agent" in error_message(response)
    response = client.post(url(project, key), json={"label": "eggs", "reviewer": "bob"})
    assert response.status_code == 422
    assert error_message(response) == (f"label 'eggs' is not one of the labels of policy version 1 that labeled item "
                                       f"{key!r}: ['ham', 'spam']")
    for body in ({"label": "spam"}, {"label": "spam", "reviewer": "bob", "extra": 1},
                 {"label": "", "reviewer": "bob"}, {"label": "spam", "reviewer": "bob", "note": "x" * 1001}):
        response = client.post(url(project, key), json=body)
        assert response.status_code == 422, body
    assert current_label(store, project, key)[1:] == ("ham", "agent"), "nothing was changed by the refusals"
    assert store.audit.corrections_of(project, key) == []


def test_ingest_keys_may_not_correct(client: TestClient, store: SqlStore, project: str) -> None:
    key = decide(store, project, ["accept"])[0]
    ingest = store.projects.create_key(name="feeder", role="ingest", projects=[project])[0]
    reviewer = store.projects.create_key(name="rev", role="reviewer", projects=[project])[0]
    body = {"label": "spam", "reviewer": "bob"}
    response = client.post(url(project, key), json=body, headers=auth(ingest))
    assert response.status_code == 403
    assert "needs role 'operator' or 'reviewer'" in error_message(response)
    assert current_label(store, project, key)[1] == "ham"
    assert client.post(url(project, key), json=body, headers=auth(reviewer)).status_code == 200
    outsider = store.projects.create_key(name="out", role="reviewer", projects=["other"])[0]
    assert client.post(url(project, key), json=body, headers=auth(outsider)).status_code == 404


def test_export_and_events_deliver_the_correction_after_an_earlier_cursor(client: TestClient, store: SqlStore,
                                                                          project: str) -> None:
    keys = decide(store, project, ["accept"] * 3)
    page = client.get(f"/projects/{project}/labels")
    cursor = page.headers["x-next-cursor"]
    last_id = decode_cursor(cursor)
    assert [json.loads(line)["external_id"] for line in page.text.splitlines()] == keys
    old_id = current_label(store, project, keys[0])[0]
    client.post(url(project, keys[0]), json={"label": "spam", "reviewer": "bob"})
    new = client.get(f"/projects/{project}/labels", params={"cursor": cursor})
    records = [json.loads(line) for line in new.text.splitlines()]
    assert [(r["external_id"], r["label"], r["source"], r["replaces_label_id"]) for r in records] == [
        (keys[0], "spam", "human", old_id)]
    assert records[0]["label_id"] > last_id
    csv_page = client.get(f"/projects/{project}/labels", params={"cursor": cursor, "format": "csv"}).text
    header, row = csv_page.splitlines()
    assert header.endswith(",replaces_label_id,snapshot_id") and row.endswith(f",{old_id},")  # human: no snapshot
    # a whole export from the start has each item once, the corrected one with its new label
    everything = [json.loads(line) for line in client.get(f"/projects/{project}/labels").text.splitlines()]
    assert {r["external_id"]: r["label"] for r in everything} == {keys[0]: "spam", keys[1]: "spam", keys[2]: "ham"}
    events = read_events(client, f"/projects/{project}/events", 1, headers={"Last-Event-ID": str(last_id)})
    assert [(e["event"], e["data"]["external_id"], e["data"]["label"], e["data"]["replaces_label_id"])
            for e in events] == [("label", keys[0], "spam", old_id)]
    assert int(events[0]["id"]) == records[0]["label_id"]


def test_the_answer_feed_hands_corrections_to_the_learner(client: TestClient, store: SqlStore, project: str) -> None:
    auto = decide(store, project, ["accept"])[0]
    human = human_labeled(store, project)
    feed = AnswerFeed(store, project, lag_seconds=0.0)
    assert [(a.item.key, a.correction) for a in feed.start()] == [(human, False)]
    client.post(url(project, auto), json={"label": "spam", "reviewer": "bob"})
    client.post(url(project, human), json={"label": "spam", "reviewer": "bob"})
    fed = feed.poll()
    assert [(a.item.key, a.label, a.correction) for a in fed] == [(auto, "spam", True), (human, "spam", True)]
    assert feed.poll() == []
    restarted = AnswerFeed(store, project, lag_seconds=0.0).start()
    assert [(a.item.key, a.label, a.correction) for a in restarted] == [(auto, "spam", True), (human, "spam", True)]
    truth = {gt.item.key: (gt.label, gt.correction) for gt in store.learning.load_ground_truth(project)}
    assert truth == {auto: ("spam", True), human: ("spam", True)}


def test_metrics_count_corrections_by_replaced_source(client: TestClient, store: SqlStore, project: str) -> None:
    keys = decide(store, project, ["accept"] * 3 + ["escalate"])
    before = client.get(f"/projects/{project}/metrics").json()
    assert before["corrections"] == {"agent": 0, "human": 0}
    client.post(url(project, keys[0]), json={"label": "spam", "reviewer": "bob"})
    client.post(url(project, keys[1]), json={"label": "ham", "reviewer": "bob"})
    client.post(url(project, human_labeled(store, project)), json={"label": "spam", "reviewer": "bob"})
    after = client.get(f"/projects/{project}/metrics").json()
    assert after["corrections"] == {"agent": 2, "human": 1}
    assert after["labels"]["agent"] == 1
    # an auto label found wrong was still an auto label: the auto rate does not move
    assert after["auto_rate"] == 3 / 5 and before["auto_rate"] == 3 / 4
    assert after["precision"] == before["precision"], "the precision estimate uses audits only"
    text = client.get("/metrics").text
    assert f'labelagent_label_corrections{{project="{project}",source="agent"}} 2' in text
    with read_tx(store.engine) as conn:
        assert conn.execute(select(func.count()).select_from(correction_t)).scalar_one() == 3
