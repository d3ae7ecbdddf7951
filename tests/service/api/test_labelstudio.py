"""Label Studio interoperability over HTTP, with the JSON examples of Label Studio's documentation as fixtures (each
fixture names its source): import a task export (annotations become human labels), export the labels back as tasks
(a round trip keeps ids, data, annotations and predictions), the ML backend protocol (predict, setup, health) and
webhooks (annotations created, updated and deleted; START_TRAINING); bad payloads and roles."""

from __future__ import annotations

import asyncio
import base64
import copy
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from policies import ToolError
from policies.model import RemoteModelSpec
from service.deps import get_tool_factory
from service.ops.labelstudio import Predictors
from service.store import SqlStore
from tests.factories import make_batch_result, make_policy
from tests.service.api.conftest import RecordingSink, auth, error_message
from tools.base import Batch, Item, ToolContext, Votes
from tools.remote import RemoteModelTool

BOMB = (
    '<?xml version="1.0"?><!DOCTYPE l [<!ENTITY a "aaaaaaaaaa">'
    + "".join(f'<!ENTITY {chr(98 + i)} "' + f"&{chr(97 + i)};" * 10 + '">' for i in range(9))
    + ']><View><Text name="t" value="&j;"/></View>'
)
FIXTURES = Path(__file__).parent / "labelstudio_fixtures"
LABELS = ["sports", "politics", "technology"]
P = "topics"
ML = f"/label-studio/{P}"
LS = f"/projects/{P}/label-studio"


def fixture(name: str) -> Any:
    return copy.deepcopy(json.loads((FIXTURES / name).read_text())["payload"])


@pytest.fixture
def topics(store: SqlStore) -> str:
    store.create_project(P, make_policy(P, labels=LABELS))
    return P


def status(client: TestClient, key: str) -> dict[str, Any]:
    response = client.get(f"/projects/{P}/items/{key}")
    assert response.status_code == 200, response.text
    return response.json()


def choice(result: list[dict[str, Any]]) -> str:
    (only,) = [r for r in result if r["type"] == "choices"]
    (label,) = only["value"]["choices"]
    return label


def test_import_then_export_round_trips_the_documented_export(
    client: TestClient, store: SqlStore, topics: str, sink: RecordingSink
) -> None:
    tasks = fixture("export_tasks.json")
    response = client.post(f"{LS}/import", params={"from_name": "topic"}, json=tasks)
    assert response.status_code == 200, response.text
    assert response.json() == {
        "inserted": ["ls-1", "ls-2", "ls-3"],
        "duplicates": [],
        "ground_truth": ["ls-1", "ls-3"],
        "unchanged": [],
    }
    assert sink.projects == [P]
    first, second = status(client, "ls-1"), status(client, "ls-2")
    assert (first["status"], first["label"], first["source"], first["client_label"]) == (
        "labeled",
        "sports",
        "human",
        "sports",
    )
    assert (second["status"], second["label"], second["source"]) == ("pending", None, None)
    assert store.count_labels(P)["human"] == 2

    exported = client.get(f"{LS}/export", params={"from_name": "topic", "to_name": "text"})
    assert exported.status_code == 200, exported.text
    assert exported.headers["X-Has-More"] == "false"
    out = {t["id"]: t for t in exported.json()}
    assert set(out) == {1, 2, 3}
    for task in tasks:
        mine = out[task["id"]]
        assert mine["data"] == task["data"]  # text and the image URL
        assert mine["predictions"] == task["predictions"]  # kept verbatim
        assert [(a["id"], choice(a["result"])) for a in mine["annotations"]] == [
            (a["id"], choice(a["result"])) for a in task["annotations"]
        ]
        for a in mine["annotations"]:
            assert a["result"][0] | {"id": None} == {
                "from_name": "topic",
                "to_name": "text",
                "type": "choices",
                "value": a["result"][0]["value"],
                "id": None,
            }
        assert mine["meta"] == {"external_id": f"ls-{task['id']}"}

    again = client.post(f"{LS}/import", params={"from_name": "topic"}, json=exported.json())
    assert again.json() == {
        "inserted": [],
        "duplicates": ["ls-1", "ls-2", "ls-3"],
        "ground_truth": [],
        "unchanged": ["ls-1", "ls-3"],
    }
    assert store.count_labels(P)["human"] == 2


def test_export_pages_and_shows_the_agents_label_as_a_prediction(
    client: TestClient, store: SqlStore, topics: str
) -> None:
    client.post(f"{LS}/import", json=[{"id": n, "data": {"text": f"text {n}"}} for n in range(1, 4)])
    token, claimed = store.claim_batch(P, worker="w", size=1)
    result = make_batch_result(store.active_policy(P), claimed, ["accept"], threshold=0.9)
    store.record_batch(P, result, token)
    agent = result.decisions[0]
    first = client.get(f"{LS}/export", params={"limit": 2})
    assert first.headers["X-Has-More"] == "true"
    rest = client.get(f"{LS}/export", params={"limit": 2, "after": first.headers["X-Next-Cursor"]})
    assert rest.headers["X-Has-More"] == "false"
    tasks = first.json() + rest.json()
    assert [t["id"] for t in tasks] == [1, 2, 3]
    assert tasks[0]["predictions"] == [
        {
            "result": [
                {"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": [agent.label]}}
            ],
            "score": pytest.approx(agent.confidence),
            "model_version": f"{P}/1",
        }
    ]
    assert tasks[0]["annotations"] == [] and tasks[1]["predictions"] == []


def test_import_refuses_labels_outside_the_label_set_naming_task_and_label(
    client: TestClient, store: SqlStore, topics: str
) -> None:
    tasks = fixture("export_tasks.json")
    tasks[2]["annotations"][0]["result"][0]["value"]["choices"] = ["Airplane"]
    response = client.post(f"{LS}/import", json=tasks)
    assert response.status_code == 422
    assert error_message(response) == (
        "task 3 annotations[0]: label 'Airplane' is not one of the project's labels "
        "['sports', 'politics', 'technology']"
    )
    tasks = fixture("export_tasks.json")
    tasks[1]["predictions"][0]["result"][0]["value"]["choices"] = ["weather"]
    response = client.post(f"{LS}/import", json=tasks)
    assert error_message(response) == (
        "task 2 predictions[0]: label 'weather' is not one of the project's labels ['sports', 'politics', 'technology']"
    )
    assert store.count_items(P)["pending"] == 0 and store.count_labels(P)["human"] == 0  # nothing stored


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ([{"data": {"text": "no id"}}], "tasks[0] has no id"),
        ([{"id": 1, "data": {"text": "a"}}, {"id": 1, "data": {"text": "b"}}], "task 1 appears twice"),
        ([{"id": 1, "data": {"text": 5}}], "ls-1: data.text must be a string, not int"),
        ([{"id": 1, "data": {}}], "ls-1: data has no 'text' and nothing else"),
        (
            [
                {
                    "id": 1,
                    "data": {"text": "a"},
                    "annotations": [{"result": [{"type": "choices", "value": {"choices": ["sports", "politics"]}}]}],
                }
            ],
            "task 1 annotations[0]: the choices result has 2 choices",
        ),
        (
            [{"id": 1, "data": {"text": "a"}, "annotations": [{"result": []}]}],
            "task 1 annotations[0]: the annotation has no choices result",
        ),
    ],
)
def test_import_bad_tasks_are_422_with_what_to_fix(
    client: TestClient, topics: str, body: list[Any], message: str
) -> None:
    response = client.post(f"{LS}/import", json=body)
    assert response.status_code == 422, response.text
    assert error_message(response).startswith(message)


def test_documented_predict_request_gets_the_documented_shape(client: TestClient, store: SqlStore, topics: str) -> None:
    before = store.count_items(P)
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
        assert 0.0 <= got["score"] <= 1.0 and got["model_version"] == f"{P}/1"
    assert body["model_version"] == f"{P}/1"
    assert store.count_items(P) == before  # predictions are not stored


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
    assert response.json() == {"model_version": f"{P}/1"}
    narrow = fixture("setup_request.json")
    narrow["schema"] = narrow["schema"].replace('<Choice value="technology" />', "")
    response = client.post(f"{ML}/setup", json=narrow)
    assert response.status_code == 422
    assert "lacks the project's labels ['technology']" in error_message(response)
    health = client.get(f"{ML}/health")
    assert health.json() == {"status": "UP", "model_class": "labelagent", "model_version": f"{P}/1"}


def test_annotation_webhooks_add_update_and_remove_ground_truth(
    client: TestClient, store: SqlStore, topics: str, sink: RecordingSink
) -> None:
    client.post(f"{LS}/import", json=[{"id": 19, "data": {"text": "Opossums are opportunistic."}}])
    token, claimed = store.claim_batch(P, worker="w")
    store.record_batch(P, make_batch_result(store.active_policy(P), claimed, ["escalate"]), token)
    assert status(client, "ls-19")["status"] == "in_review"
    assert store.count_tasks(P)["open"] == 1
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
    assert store.count_tasks(P) == {"open": 0, "claimed": 0, "done": 1}  # nobody reviews it any more
    assert sink.projects == [P]
    truth = store.load_ground_truth(P)
    assert [(gt.item.key, gt.label) for gt in truth] == [("ls-19", "technology")]  # what the learner reads

    repeated = client.post(f"{ML}/webhook", json=fixture("annotation_created.json"))
    assert repeated.json()["applied"] is False
    updated = client.post(f"{ML}/webhook", json=fixture("annotation_updated.json"))
    assert updated.status_code == 201
    assert status(client, "ls-19")["label"] == "politics"
    assert store.count_labels(P)["human"] == 1

    deleted = client.post(f"{ML}/webhook", json=fixture("annotations_deleted.json"))
    assert deleted.status_code == 201, deleted.text
    assert deleted.json()["external_ids"] == ["ls-19"]
    item = status(client, "ls-19")
    assert (item["status"], item["label"], item["source"]) == ("in_review", None, None)
    assert store.count_tasks(P)["open"] == 1  # back to review
    assert store.count_labels(P)["human"] == 0


def test_annotation_on_a_pending_item_and_skipped_annotations(client: TestClient, store: SqlStore, topics: str) -> None:
    client.post(f"{LS}/import", json=[{"id": 19, "data": {"text": "Opossums are opportunistic."}}])
    client.post(f"{ML}/webhook", json=fixture("annotation_created.json"))
    assert status(client, "ls-19")["status"] == "labeled"
    skipped = fixture("annotation_updated.json")
    skipped["annotation"]["was_cancelled"] = True
    response = client.post(f"{ML}/webhook", json=skipped)
    assert response.status_code == 201 and "was skipped" in response.json()["message"]
    assert status(client, "ls-19")["status"] == "pending"  # back to the agent
    assert store.count_labels(P)["human"] == 0


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
    reviewer = store.create_key(name="ls", role="reviewer", projects=[P])[0]
    ingest = store.create_key(name="feed", role="ingest", projects=[P])[0]
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


def test_items_of_other_sources_export_without_a_task_id(client: TestClient, store: SqlStore, topics: str) -> None:
    store.ingest(P, [Item(key="feed-1", text="hello", metadata={"lang": "en"})])
    (task,) = client.get(f"{LS}/export").json()
    assert task["id"] is None and task["data"] == {"lang": "en", "text": "hello"}
    assert task["meta"] == {"external_id": "feed-1"}


@pytest.fixture
def live(app: FastAPI) -> Iterator[str]:
    """The app behind uvicorn on a free loopback port (a real HTTP server for HTTP clients)."""
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
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
    key = store.create_key(name="ls", role="reviewer", projects=[P])[0]
    config = fixture("predict_request.json")["label_config"]
    spec = RemoteModelSpec(name="peer", url=f"http://label-studio:{key}@{live}{ML}/predict", label_config=config)
    tool = RemoteModelTool(spec, LABELS)
    items = [Item(key=f"x{i}", text="win a match" if i % 2 else "a quiet day") for i in range(6)]
    votes = asyncio.run(tool.predict(Batch(items), ToolContext(labels=tuple(LABELS))))
    assert not votes.abstain.any()
    assert [LABELS[int(j)] for j in votes.probs.argmax(axis=1)] == ["sports", "technology"] * 3
    assert votes.model_version == f"{P}/1" and tool.requests == 1
    denied = RemoteModelTool(spec.model_copy(update={"url": f"http://label-studio:wrong@{live}{ML}/predict"}), LABELS)
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
