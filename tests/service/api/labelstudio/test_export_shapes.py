"""Every export shape Label Studio 1.23 writes imports (issue 16, problems 1 and 4): the JSON export (predictions as
ids, drafts, meta, several annotations, skipped ones, ground-truth stars), JSON-MIN; the round trip keeps every
annotation (created_at, completed_by, lead_time, skipped state) and the task's meta while labelagent's ground truth
stays one label per item, the label of the latest annotation that is not skipped."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.store import SqlStore
from tests.service.api.conftest import error_message
from tests.service.api.labelstudio.helpers import LS, P, choice, status


def result(label: str) -> list[dict[str, Any]]:
    return [{"id": "r1", "type": "choices", "from_name": "topic", "to_name": "text", "origin": "manual",
             "value": {"choices": [label]}}]


def annotation(aid: int, label: str | None, created: str, **extra: Any) -> dict[str, Any]:
    """An annotation as Label Studio 1.23's JSON export writes it (tasks/serializers.py, AnnotationSerializer)."""
    return {"id": aid, "completed_by": 1, "result": result(label) if label else [], "was_cancelled": label is None,
            "ground_truth": False, "created_at": created, "updated_at": created, "draft_created_at": None,
            "lead_time": 2.5 + aid, "prediction": {}, "result_count": 1, "unique_id": f"u{aid}", "import_id": None,
            "last_action": None, "bulk_created": False, "task": 5000, "project": 3, "updated_by": 1,
            "parent_prediction": None, "parent_annotation": None, "last_created_by": None, **extra}


def exported_task() -> dict[str, Any]:
    """A task of ``GET /api/projects/3/export?exportType=JSON``: predictions as ids, drafts, meta, three
    annotations (a skipped one last, a ground-truth star on the first)."""
    return {
        "id": 5000, "data": {"text": "hi"}, "meta": {"batch": "b7"}, "inner_id": 1, "total_annotations": 3,
        "cancelled_annotations": 1, "total_predictions": 1, "comment_count": 0, "unresolved_comment_count": 0,
        "last_comment_updated_at": None, "project": 3, "updated_by": 1, "file_upload": None, "comment_authors": [],
        "created_at": "2026-12-01T10:00:00.000000Z", "updated_at": "2026-12-01T10:09:00.000000Z",
        "predictions": [5],
        "drafts": [{"id": 9, "user": "a@b.c", "created_username": "a", "created_ago": "1 minute",
                    "result": result("politics"), "lead_time": 1.0, "was_postponed": False,
                    "created_at": "2026-12-01T10:08:00Z", "updated_at": "2026-12-01T10:08:00Z"}],
        "annotations": [
            annotation(11, "sports", "2026-12-01T10:01:00.000000Z", ground_truth=True),
            annotation(12, "technology", "2026-12-01T10:02:00.000000Z", completed_by=2),
            annotation(13, None, "2026-12-01T10:03:00.000000Z"),
        ],
    }


def test_the_json_export_with_prediction_ids_imports_and_round_trips_every_annotation(
    client: TestClient, store: SqlStore, topics: str
) -> None:
    response = client.post(f"{LS}/import", params={"from_name": "topic"}, json=[exported_task()])
    assert response.status_code == 200, response.text
    assert response.json()["inserted"] == ["ls-5000"] and response.json()["ground_truth"] == ["ls-5000"]
    item = status(client, "ls-5000")
    assert (item["label"], item["source"]) == ("technology", "human")  # the latest one that is not skipped
    assert store.learning.count_labels(P)["human"] == 1  # one label per item

    (task,) = client.get(f"{LS}/export", params={"from_name": "topic"}).json()
    assert task["meta"] == {"batch": "b7", "external_id": "ls-5000"}
    assert task["data"] == {"text": "hi"} and task["predictions"] == []  # the id refers to Label Studio's row
    sent = exported_task()["annotations"]
    assert [(a["id"], a["was_cancelled"], a["ground_truth"], a["completed_by"], a["lead_time"]) for a in
            task["annotations"]] == [(a["id"], a["was_cancelled"], a["ground_truth"], a["completed_by"],
                                      a["lead_time"]) for a in sent]
    assert [a["created_at"][:19] for a in task["annotations"]] == [a["created_at"][:19] for a in sent]
    assert [a["result"] for a in task["annotations"]] == [a["result"] for a in sent]

    again = client.post(f"{LS}/import", params={"from_name": "topic"}, json=[task])
    assert again.json()["unchanged"] == ["ls-5000"]
    assert len(client.get(f"{LS}/export").json()[0]["annotations"]) == 3  # a re-import adds nothing


def test_json_min_export_imports_with_one_record_per_annotation(
    client: TestClient, store: SqlStore, topics: str
) -> None:
    """JSON-MIN (label_studio_converter's convert_to_json_min): flat records, newest annotation first, a task
    without annotations as one record with its data only."""
    records = [
        {"id": 7, "text": "a match", "source": "rss", "topic": "politics", "annotator": 2, "annotation_id": 22,
         "created_at": "2026-12-01T10:05:00Z", "updated_at": "2026-12-01T10:05:00Z", "lead_time": 3.0},
        {"id": 7, "text": "a match", "source": "rss", "topic": "sports", "annotator": 1, "annotation_id": 21,
         "created_at": "2026-12-01T10:01:00Z", "updated_at": "2026-12-01T10:01:00Z", "lead_time": 1.0},
        {"id": 8, "text": "no answer yet", "source": "rss"},
    ]
    response = client.post(f"{LS}/import", json=records)
    assert response.status_code == 200, response.text
    assert response.json()["inserted"] == ["ls-7", "ls-8"] and response.json()["ground_truth"] == ["ls-7"]
    assert status(client, "ls-7")["label"] == "politics"  # annotation 22 is the latest
    tasks = {t["id"]: t for t in client.get(f"{LS}/export", params={"from_name": "topic"}).json()}
    assert tasks[7]["data"] == {"text": "a match", "source": "rss"}
    assert [(a["id"], a["completed_by"], choice(a["result"])) for a in tasks[7]["annotations"]] == [
        (21, 1, "sports"), (22, 2, "politics")]
    assert tasks[8]["annotations"] == []
    ambiguous = [{"id": 9, "text": "x", "topic": "sports", "other": "politics", "annotation_id": 1}]
    response = client.post(f"{LS}/import", json=ambiguous)
    assert response.status_code == 422
    assert "keys ['topic', 'other'] all look like answers; pass from_name" in error_message(response)
    assert client.post(f"{LS}/import", params={"from_name": "topic"}, json=ambiguous).status_code == 200


@pytest.mark.parametrize(
    ("task", "message"),
    [
        ({"id": 1, "data": {"text": "a"}, "annotations": [{"id": 2, "result": result("weather")}]},
         "task 1 annotations[0]: label 'weather' is not one of the project's labels"),
        ({"id": 1, "data": {"text": "a"}, "predictions": [[5]]}, None),
        ([{"id": 4, "text": "a", "annotation_id": 3, "annotator": 1}], "task 4: annotation 3 has no answer"),
    ],
)
def test_only_what_is_really_invalid_is_refused(
    client: TestClient, topics: str, task: Any, message: str | None
) -> None:
    response = client.post(f"{LS}/import", json=task if isinstance(task, list) else [task])
    assert response.status_code == 422, response.text
    if message is not None:
        assert error_message(response).startswith(message)


def test_the_round_trip_keeps_the_meta_and_every_annotation(client: TestClient, store: SqlStore, topics: str) -> None:
    """Problem 4 alone (no prediction ids): a skipped annotation, two annotators, their times and the meta."""
    task = exported_task() | {"predictions": []}
    assert client.post(f"{LS}/import", params={"from_name": "topic"}, json=[task]).status_code == 200
    (out,) = client.get(f"{LS}/export").json()
    assert out["meta"]["batch"] == "b7"
    assert [(a["id"], a["was_cancelled"], a["completed_by"], a["lead_time"], a["created_at"][:16]) for a in
            out["annotations"]] == [(11, False, 1, 13.5, "2026-12-01T10:01"), (12, False, 2, 14.5, "2026-12-01T10:02"),
                                    (13, True, 1, 15.5, "2026-12-01T10:03")]
    assert store.learning.count_labels(P)["human"] == 1
