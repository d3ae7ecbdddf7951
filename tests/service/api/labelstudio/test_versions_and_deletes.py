"""Issue 16, problems 2, 3, 6 and 7: ``model_version`` follows what ``/predict`` would answer (Label Studio skips
tasks with a prediction of the current version, so a constant version never refreshed them); deleting the newer of
two annotations restores the older one's label; ``GET /versions``; refusals on ``/label-studio/*`` are logged with
their reason (Label Studio shows only the status line and points to the backend's console)."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from fastapi.testclient import TestClient

from service.store import SqlStore
from tests.service.api.labelstudio.helpers import LS, ML, P, fixture, status


def annotation_webhook(aid: int, label: str, created: str, action: str = "ANNOTATION_CREATED") -> dict[str, Any]:
    return {"action": action, "annotation": {
        "id": aid, "task": 19, "created_at": created, "updated_at": created, "completed_by": 1, "lead_time": 4.0,
        "was_cancelled": False, "result": [{"type": "choices", "from_name": "topic", "to_name": "text",
                                            "value": {"choices": [label]}}]}}


def version(client: TestClient) -> str:
    response = client.post(f"{ML}/setup", json=fixture("setup_request.json"))
    assert response.status_code == 200, response.text
    return response.json()["model_version"]


def test_model_version_changes_with_what_predict_would_answer(client: TestClient, topics: str) -> None:
    client.post(f"{LS}/import", json=[{"id": 19, "data": {"text": "Opossums are opportunistic."}}])
    request = fixture("predict_request.json")
    before = version(client)
    predicted = client.post(f"{ML}/predict", json=request).json()
    assert predicted["model_version"] == before == version(client)  # nothing changed: the same version
    assert {r["model_version"] for r in predicted["results"]} == {before}

    client.post(f"{ML}/webhook", json=annotation_webhook(17, "sports", "2026-12-01T10:00:00Z"))
    after = version(client)  # new ground truth: what /predict answers for task 19 changed
    assert after != before and after.startswith(f"{P}/1@")
    assert client.post(f"{ML}/predict", json=request).json()["model_version"] == after
    client.post(f"{ML}/webhook", json=fixture("start_training.json"))  # the labeler learns it: new answers again
    trained = client.post(f"{ML}/predict", json=request).json()["model_version"]
    assert trained == version(client) == client.get(f"{ML}/health").json()["model_version"]
    assert trained not in (before, after)


def test_versions_lists_the_current_model_version(client: TestClient, topics: str) -> None:
    response = client.get(f"{ML}/versions")
    assert response.status_code == 200, response.text
    assert response.json() == {"versions": [version(client)]}


def test_deleting_the_newer_annotation_restores_the_older_label(
    client: TestClient, store: SqlStore, topics: str
) -> None:
    client.post(f"{LS}/import", json=[{"id": 19, "data": {"text": "Opossums are opportunistic."}}])
    client.post(f"{ML}/webhook", json=annotation_webhook(17, "sports", "2026-12-01T10:00:00Z"))
    client.post(f"{ML}/webhook", json=annotation_webhook(18, "politics", "2026-12-01T10:05:00Z"))
    assert status(client, "ls-19")["label"] == "politics"
    # updating the older annotation does not make it the latest: the rule is the same for every event
    updated = client.post(f"{ML}/webhook", json=annotation_webhook(17, "technology", "2026-12-01T10:00:00Z",
                                                                   "ANNOTATION_UPDATED"))
    assert updated.json()["applied"] is False and status(client, "ls-19")["label"] == "politics"

    deleted = client.post(f"{ML}/webhook", json={"action": "ANNOTATIONS_DELETED", "annotations": [{"id": 18}]})
    assert deleted.status_code == 201, deleted.text
    assert deleted.json()["external_ids"] == ["ls-19"]
    item = status(client, "ls-19")
    assert (item["status"], item["label"], item["source"]) == ("labeled", "technology", "human")
    assert store.learning.count_labels(P)["human"] == 1
    (export,) = client.get(f"{LS}/export").json()
    assert [a["id"] for a in export["annotations"]] == [17]

    client.post(f"{ML}/webhook", json={"action": "ANNOTATION_DELETED", "annotation": {"id": 17}})
    assert (status(client, "ls-19")["label"], store.learning.count_labels(P)["human"]) == (None, 0)


def test_a_skipped_newer_annotation_leaves_the_older_label(client: TestClient, topics: str) -> None:
    client.post(f"{LS}/import", json=[{"id": 19, "data": {"text": "Opossums are opportunistic."}}])
    client.post(f"{ML}/webhook", json=annotation_webhook(17, "sports", "2026-12-01T10:00:00Z"))
    skipped = annotation_webhook(18, "politics", "2026-12-01T10:05:00Z")
    skipped["annotation"] |= {"was_cancelled": True, "result": []}
    assert client.post(f"{ML}/webhook", json=skipped).status_code == 201
    assert status(client, "ls-19")["label"] == "sports"


@pytest.mark.parametrize(
    ("method", "path", "body", "reason"),
    [
        ("POST", f"{ML}/setup", "narrow", "lacks the project's labels ['technology']"),
        ("POST", f"{ML}/predict", {"tasks": "x"}, "body.tasks: Input should be a valid list"),
        ("POST", f"{ML}/webhook", {"action": "ANNOTATION_CREATED"}, "ANNOTATION_CREATED needs 'annotation'"),
    ],
)
def test_refusals_are_logged_with_their_reason(
    client: TestClient, topics: str, caplog: pytest.LogCaptureFixture, method: str, path: str, body: Any,
    reason: str,
) -> None:
    if body == "narrow":
        body = fixture("setup_request.json")
        body["schema"] = body["schema"].replace('<Choice value="technology" />', "")
    with caplog.at_level(logging.WARNING, logger="labelagent.labelstudio"):
        response = client.request(method, path, json=body)
    assert response.status_code == 422
    (record,) = [r for r in caplog.records if r.name == "labelagent.labelstudio"]
    assert record.levelno == logging.WARNING
    assert path.replace("{", "") in record.getMessage() and reason in record.getMessage()


def test_a_refused_key_is_logged(app, topics: str, caplog: pytest.LogCaptureFixture) -> None:  # type: ignore[no-untyped-def]
    with caplog.at_level(logging.WARNING, logger="labelagent.labelstudio"), TestClient(app) as anonymous:
        assert anonymous.get(f"{ML}/health").status_code == 401
    (record,) = [r for r in caplog.records if r.name == "labelagent.labelstudio"]
    assert f"GET {ML}/health refused (401)" in record.getMessage()


def test_readme_gives_the_steps_the_contract_test_runs() -> None:
    """Problem 5: the Label Studio side settings and the one PATCH that gives the backend's webhook its key (the
    contract test, test_real_label_studio.py, runs the same PATCH against a real Label Studio)."""
    from pathlib import Path

    readme = (Path(__file__).parents[4] / "README.md").read_text()
    section = readme[readme.index("## Label Studio"):readme.index("## Results")]
    for needed in ("ML_BLOCK_LOCAL_IP=false", "SSRF_PROTECTION_ENABLED=false", "/api/webhooks/$WEBHOOK_ID/",
                   '{"headers": {"Authorization": "Bearer <labelagent key>"}}', "GET /api/webhooks/?project="):
        assert needed in section, needed
