"""Label Studio's ML backend protocol over HTTP (predict, setup, health) and its webhooks (annotations created,
updated and deleted; START_TRAINING), with the JSON examples of Label Studio's documentation as fixtures; bad
payloads, credentials and roles; labelagent's own Label Studio client against this backend."""

from __future__ import annotations

import asyncio
import base64
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from policies import ToolError
from policies.model import RemoteModelSpec
from service.api.deps import get_tool_factory
from service.api.ops.labelstudio_backend import Predictors
from service.store import SqlStore
from tests.factories import make_batch_result
from tests.service.api.conftest import RecordingSink, auth, error_message
from tests.service.api.labelstudio.helpers import LABELS, LS, ML, P, choice, fixture, status
from tools.base import Batch, Item, ToolContext, Votes
from tools.environment import ToolEnvironment
from tools.remote import RemoteModelTool

BOMB = (
    '<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
    + "".join(f'<!ENTITY {chr(98 + i)} "' + f"&{chr(97 + i)};" * 10 + '">' for i in range(9))
    + ']><View><Text name="t" value="&j;"/></View>'
)


def test_documented_predict_request_gets_the_documented_shape(client: TestClient, store: SqlStore, topics: str) -> None:
    before = store.items.count_items(P)
    response = client.post(f"{ML}/predict", json=fixture("predict_request.json"))
    assert response.status_code == 200, response.text
    body = response.json()
    expected = fixture("predict_response_expected.json")
    assert len(body["results"]) == len(expected["results"])
    for got, want in zip(body["results"], expected["results"], strict=True):
        assert [{k: r[k] for k in ("from_name", "to_name", "type")} for r in got["result"]] == [
            {k: r[k] for k in ("from_name", "to_name", "type")} for r in want["result"]
        ]
        assert choice(got["result"]) in LABELS
        assert 0.0 <= got["score"] <= 1.0 and got["model_version"] == body["model_version"]
    assert body["model_version"].startswith(f"{P}/1@")
    assert store.items.count_items(P) == before  # predictions are not stored


class TopicTool:
    """Votes ``technology`` (0.9) when the text mentions "win", else ``sports`` (0.9): a deterministic voter."""

    kind = "keyword"
    cost = 0.0

    def __init__(self, name: str) -> None:
        self.name = name

    async def predict(self, batch: Batch, context: ToolContext) -> Votes:
        n, labels = len(batch), context.labels
        probs = np.full((n, len(labels)), 0.05)
        for i, text in enumerate(batch.texts):
            probs[i, labels.index("technology" if "win" in text else "sports")] = 0.9
        return Votes(self.name, probs, np.zeros(n, dtype=bool), np.zeros(n), ["topic keywords"] * n)


def test_predict_returns_stored_labels_and_labels_a_batch_in_one_run(client: TestClient, topics: str) -> None:
    client.app.dependency_overrides[get_tool_factory] = lambda: (
        lambda policy: [  # type: ignore[attr-defined]
            TopicTool(spec.name) for spec in policy.enabled_tools()
        ]
    )
    tasks = fixture("export_tasks.json")
    client.post(f"{LS}/import", params={"from_name": "topic"}, json=tasks)
    request = fixture("predict_request.json")
    request["tasks"] = [{"id": 3, "data": tasks[2]["data"]}]
    response = client.post(f"{ML}/predict", json=request)
    (only,) = response.json()["results"]
    assert choice(only["result"]) == "technology" and only["score"] == 1.0  # the human label
    predictors = client.app.state.label_studio_predictors  # type: ignore[attr-defined]
    assert predictors.builds == 0  # the agent did not run
    request["tasks"] = [{"id": 3, "data": {"text": "same id, other data: another client's task 3"}}] + [
        {"id": 100 + n, "data": {"text": f"free tickets to win {n}"}} for n in range(50)
    ]
    response = client.post(f"{ML}/predict", json=request)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert len(results) == 51
    labels = [choice(r["result"]) for r in results if r["result"]]
    assert labels == ["sports"] + ["technology"] * 50  # the agent's decisions with the project's tools
    assert all(0.5 < r["score"] <= 1.0 for r in results)
    assert predictors.builds == 1
    client.post(f"{ML}/predict", json=request)
    assert predictors.builds == 1  # the labeler is cached


def test_setup_and_health(client: TestClient, topics: str) -> None:
    response = client.post(f"{ML}/setup", json=fixture("setup_request.json"))
    assert response.status_code == 200, response.text
    version = response.json()["model_version"]
    assert version.startswith(f"{P}/1@")
    narrow = fixture("setup_request.json")
    narrow["schema"] = narrow["schema"].replace('<Choice value="technology" />', "")
    response = client.post(f"{ML}/setup", json=narrow)
    assert response.status_code == 422
    assert "lacks the project's labels ['technology']" in error_message(response)
    health = client.get(f"{ML}/health")
    assert health.json() == {"status": "UP", "model_class": "labelagent", "model_version": version}


def test_annotation_webhooks_add_update_and_remove_ground_truth(
    client: TestClient, store: SqlStore, topics: str, sink: RecordingSink
) -> None:
    client.post(f"{LS}/import", json=[{"id": 19, "data": {"text": "Opossums are opportunistic."}}])
    token, claimed = store.items.claim_batch(P, worker="w")
    store.items.record_batch(P, make_batch_result(store.projects.active_policy(P), claimed, ["escalate"]), token)
    assert status(client, "ls-19")["status"] == "in_review"
    assert store.reviews.count_tasks(P)["open"] == 1
    sink.projects.clear()

    created = client.post(f"{ML}/webhook", json=fixture("annotation_created.json"))
    assert created.status_code == 201, created.text
    assert created.json()["applied"] is True and created.json()["external_ids"] == ["ls-19"]
    item = status(client, "ls-19")
    assert (item["status"], item["label"], item["source"], item["confidence"]) == (
        "labeled",
        "technology",
        "human",
        1.0,
    )
    assert store.reviews.count_tasks(P) == {"open": 0, "claimed": 0, "done": 1}  # nobody reviews it any more
    assert sink.projects == [P]
    truth = store.learning.load_ground_truth(P)
    assert [(gt.item.key, gt.label) for gt in truth] == [("ls-19", "technology")]  # what the learner reads

    repeated = client.post(f"{ML}/webhook", json=fixture("annotation_created.json"))
    assert repeated.json()["applied"] is False
    before = store.items.label_rows(P)  # a consumer's cursor, taken before the annotation changes
    assert [r.label for r in before] == ["technology"]
    updated = client.post(f"{ML}/webhook", json=fixture("annotation_updated.json"))
    assert updated.status_code == 201
    assert status(client, "ls-19")["label"] == "politics"
    assert store.learning.count_labels(P)["human"] == 1
    # the new label has a new, larger id (SQLite reused the replaced row's id): cursors past the old one see it
    assert [(r.external_id, r.label) for r in store.items.label_rows(P, after_id=before[-1].id)] == [("ls-19",
                                                                                                      "politics")]
    # a changed label is a correction: the learner replaces the item's answer instead of adding a second one
    fed, cursor = store.learning.load_ground_truth_since(P, after_id=before[-1].id)
    assert [(a.answer.item.key, a.answer.label, a.answer.correction) for a in fed] == [("ls-19", "politics", True)]
    (fix,) = store.audit.corrections_of(P, "ls-19")
    assert (fix.replaced_label, fix.label, fix.replaced_source, fix.reviewer) == (
        "technology", "politics", "human", "label-studio")
    assert store.audit.count_corrections(P)["human"] == 1
    # another annotation with the same label: the row keeps its id (nobody is sent the same answer again)
    again = fixture("annotation_updated.json")
    again["annotation"]["id"] += 1
    assert client.post(f"{ML}/webhook", json=again).status_code == 201
    assert store.learning.load_ground_truth_since(P, after_id=cursor)[0] == []
    assert status(client, "ls-19")["label"] == "politics"
    # the older annotation sent again: annotation 18 is still the latest, nothing changes
    assert client.post(f"{ML}/webhook", json=fixture("annotation_updated.json")).json()["applied"] is False
    assert store.learning.load_ground_truth_since(P, after_id=cursor)[0] == []

    deleted = client.post(f"{ML}/webhook", json=fixture("annotations_deleted.json"))  # annotation 17
    assert deleted.status_code == 201, deleted.text
    assert deleted.json()["applied"] is False and status(client, "ls-19")["label"] == "politics"  # 18's label
    deleted = client.post(f"{ML}/webhook", json={"action": "ANNOTATIONS_DELETED", "annotations": [{"id": 18}]})
    assert deleted.json()["external_ids"] == ["ls-19"]
    item = status(client, "ls-19")
    assert (item["status"], item["label"], item["source"]) == ("in_review", None, None)
    assert store.reviews.count_tasks(P)["open"] == 1  # back to review
    assert store.learning.count_labels(P)["human"] == 0


def test_annotation_on_a_pending_item_and_skipped_annotations(client: TestClient, store: SqlStore, topics: str) -> None:
    client.post(f"{LS}/import", json=[{"id": 19, "data": {"text": "Opossums are opportunistic."}}])
    client.post(f"{ML}/webhook", json=fixture("annotation_created.json"))
    assert status(client, "ls-19")["status"] == "labeled"
    skipped = fixture("annotation_updated.json")
    skipped["annotation"]["was_cancelled"] = True
    response = client.post(f"{ML}/webhook", json=skipped)
    assert response.status_code == 201 and "was skipped" in response.json()["message"]
    assert status(client, "ls-19")["status"] == "pending"  # back to the agent
    assert store.learning.count_labels(P)["human"] == 0


def test_webhook_with_the_task_imports_it(client: TestClient, topics: str) -> None:
    payload = fixture("annotation_created.json")
    payload["task"] = {"id": 19, "data": {"text": "Opossums are opportunistic."}}
    response = client.post(f"{ML}/webhook", json=payload)
    assert response.status_code == 201, response.text
    assert status(client, "ls-19")["label"] == "technology"
    tasks = client.post(
        f"{ML}/webhook",
        json={
            "action": "TASKS_CREATED",
            "tasks": [{"id": 21, "data": {"text": "Opossums like to be aloft in trees."}}],
        },
    )
    assert tasks.json()["external_ids"] == ["ls-21"] and status(client, "ls-21")["status"] == "pending"


def test_start_training_wakes_the_workers_and_reloads_predict(
    client: TestClient, topics: str, sink: RecordingSink
) -> None:
    client.post(f"{ML}/predict", json=fixture("predict_request.json"))
    response = client.post(f"{ML}/webhook", json=fixture("start_training.json"))
    assert response.status_code == 201
    assert response.json()["action"] == "START_TRAINING" and response.json()["applied"] is True
    assert sink.projects == [P]
    client.post(f"{ML}/predict", json=fixture("predict_request.json"))
    assert client.app.state.label_studio_predictors.builds == 2  # type: ignore[attr-defined]
    other = client.post(f"{ML}/webhook", json={"action": "PROJECT_UPDATED", "project": {"id": 2}})
    assert other.status_code == 201 and other.json()["applied"] is False


@pytest.mark.parametrize(
    ("path", "body", "status_code", "message"),
    [
        (
            f"{ML}/webhook",
            "annotation_created_doc.json",
            422,
            "task 19 annotation 17: the annotation has no choices result",
        ),
        (f"{ML}/webhook", "annotation_created.json", 404, "item 'ls-19' does not exist in this project"),
        (f"{ML}/webhook", {"action": "ANNOTATION_CREATED"}, 422, "ANNOTATION_CREATED needs 'annotation'"),
        (
            f"{ML}/webhook",
            {"action": "ANNOTATIONS_DELETED", "annotations": [{"id": "x"}]},
            422,
            "ANNOTATIONS_DELETED needs the deleted annotations' ids",
        ),
        (
            f"{ML}/predict",
            {"tasks": [{"data": {"text": "a"}}], "label_config": "<View"},
            422,
            "label_config is not valid XML",
        ),
        (f"{ML}/predict", {"tasks": [{"data": {"text": 3}}]}, 422, "predict-0: data.text must be a string"),
        (
            f"{ML}/predict",
            {"tasks": [{"data": {"text": "a"}}], "label_config": BOMB},
            422,
            "label_config is not valid XML",
        ),
    ],
)
def test_bad_payloads_are_422_or_404_with_clear_messages(
    client: TestClient, topics: str, path: str, body: Any, status_code: int, message: str
) -> None:
    response = client.post(path, json=fixture(body) if isinstance(body, str) else body)
    assert response.status_code == status_code, response.text
    assert error_message(response).startswith(message)


@pytest.mark.parametrize("path", [f"{ML}/predict", f"{ML}/webhook", f"{ML}/setup", f"{LS}/import"])
@pytest.mark.parametrize("body", [{}, [], {"tasks": "x"}, {"action": 3}, None])
def test_malformed_bodies_are_validation_errors(client: TestClient, topics: str, path: str, body: Any) -> None:
    response = client.post(path, json=body)
    if path.endswith("/setup") and isinstance(body, dict):  # every field of /setup is optional
        return
    assert response.status_code == 422, (path, body, response.text)
    assert response.json()["detail"]


def basic(key: str, user: str = "label-studio") -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{user}:{key}".encode()).decode()}


def test_label_studio_credentials_and_roles(app, store: SqlStore, topics: str) -> None:  # type: ignore[no-untyped-def]
    reviewer = store.projects.create_key(name="ls", role="reviewer", projects=[P])[0]
    ingest = store.projects.create_key(name="feed", role="ingest", projects=[P])[0]
    client = TestClient(app, raise_server_exceptions=False)
    request = fixture("predict_request.json")
    assert client.post(f"{ML}/predict", json=request, headers=basic(reviewer)).status_code == 200
    assert client.get(f"{ML}/health", headers={"Authorization": f"Token {reviewer}"}).status_code == 200
    assert client.get(f"{ML}/health", headers=basic(reviewer, user="")).status_code == 200
    assert client.post(f"{ML}/webhook", json=fixture("start_training.json"), headers=basic(reviewer)).status_code == 201
    assert client.post(f"{ML}/predict", json=request, headers=auth(ingest)).status_code == 200
    denied = client.post(f"{ML}/webhook", json=fixture("start_training.json"), headers=basic(ingest))
    assert denied.status_code == 403
    assert error_message(denied).startswith("a key of role 'ingest' may not call POST /label-studio/{project}/webhook")
    assert client.post(f"{LS}/import", json=[], headers=basic(reviewer)).status_code == 403
    for headers in (basic("la_nope"), {"Authorization": "Basic !!!"}, {"Authorization": "Token "}, {}):
        response = client.get(f"{ML}/health", headers=headers)
        assert response.status_code == 401, (headers, response.text)
    assert error_message(client.get(f"{ML}/health", headers={"Authorization": "Basic !!!"})) == (
        "the Basic credentials are not base64 of 'user:password'"
    )


@pytest.fixture
def live(app: FastAPI) -> Iterator[str]:
    """The app behind uvicorn on a free loopback port (a real HTTP server for HTTP clients)."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60  # a bound for a loaded machine: the loop waits on the server's own flag
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.01)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"127.0.0.1:{port}"
    server.should_exit = True
    thread.join(10)


def test_labelagents_own_label_studio_client_reads_the_backend_over_http(
    live: str, app: FastAPI, store: SqlStore, topics: str
) -> None:
    """``tools.remote`` speaks Label Studio's ML backend protocol as a client (written from Label Studio's docs): it
    reads this backend's answers, with the key as Basic password in the URL as Label Studio would send it."""
    app.dependency_overrides[get_tool_factory] = lambda: (
        lambda policy: [TopicTool(spec.name) for spec in policy.enabled_tools()]
    )
    key = store.projects.create_key(name="ls", role="reviewer", projects=[P])[0]
    config = fixture("predict_request.json")["label_config"]
    spec = RemoteModelSpec(name="peer", url=f"http://label-studio:{key}@{live}{ML}/predict", label_config=config)
    env = ToolEnvironment(tool_endpoints=(f"http://{live}{ML}/predict",))  # the operator allows the loopback backend
    tool = RemoteModelTool(spec, LABELS, env=env)
    items = [Item(key=f"x{i}", text="win a match" if i % 2 else "a quiet day") for i in range(6)]
    votes = asyncio.run(tool.predict(Batch(items), ToolContext(labels=tuple(LABELS))))
    assert not votes.abstain.any()
    assert [LABELS[int(j)] for j in votes.probs.argmax(axis=1)] == ["sports", "technology"] * 3
    assert (votes.model_version or "").startswith(f"{P}/1@") and tool.requests == 1
    denied = RemoteModelTool(spec.model_copy(update={"url": f"http://label-studio:wrong@{live}{ML}/predict"}), LABELS,
                             env=env)
    with pytest.raises(ToolError, match="HTTP 401"):
        asyncio.run(denied.predict(Batch(items), ToolContext(labels=tuple(LABELS))))


def test_predict_reloads_its_model_when_ground_truth_changed(client: TestClient, topics: str) -> None:
    predictors = client.app.state.label_studio_predictors = Predictors(refresh_seconds=0)  # type: ignore[attr-defined]
    request = fixture("predict_request.json")
    client.post(f"{ML}/predict", json=request)
    client.post(f"{ML}/predict", json=request)
    assert predictors.builds == 1  # nothing changed
    client.post(f"{LS}/import", params={"from_name": "topic"}, json=fixture("export_tasks.json"))
    client.post(f"{ML}/predict", json=request)
    assert predictors.builds == 2  # new ground truth: the learner is restored again
