"""Label Studio's task import and export over HTTP, with the documentation's task export as fixture: import a task
export (annotations become human labels), export the labels back as tasks (a round trip keeps ids, data, annotations
and predictions; the agent's labels are predictions); bad tasks."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.store import SqlStore
from tests.factories import make_batch_result
from tests.service.api.conftest import RecordingSink, error_message
from tests.service.api.labelstudio.helpers import LS, P, choice, fixture, status
from tools.base import Item


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
    assert store.learning.count_labels(P)["human"] == 2

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
    assert store.learning.count_labels(P)["human"] == 2


def test_export_pages_and_shows_the_agents_label_as_a_prediction(
    client: TestClient, store: SqlStore, topics: str
) -> None:
    client.post(f"{LS}/import", json=[{"id": n, "data": {"text": f"text {n}"}} for n in range(1, 4)])
    token, claimed = store.items.claim_batch(P, worker="w", size=1)
    result = make_batch_result(store.projects.active_policy(P), claimed, ["accept"], threshold=0.9)
    store.items.record_batch(P, result, token)
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
    assert store.items.count_items(P)["pending"] == 0 and store.learning.count_labels(P)["human"] == 0  # nothing stored


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


def test_items_of_other_sources_export_without_a_task_id(client: TestClient, store: SqlStore, topics: str) -> None:
    store.items.ingest(P, [Item(key="feed-1", text="hello", metadata={"lang": "en"})])
    (task,) = client.get(f"{LS}/export").json()
    assert task["id"] is None and task["data"] == {"lang": "en", "text": "hello"}
    assert task["meta"] == {"external_id": "feed-1"}
