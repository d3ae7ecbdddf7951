"""One sanitizer for every string and key (finding 5 of issue 17): lone UTF-16 surrogates, NUL and oversized or
deeply nested values are a 422 that says what to fix, never a 500 and never a stored poison item; cursors are
ASCII-only."""

from __future__ import annotations

import base64

import pytest
from fastapi.testclient import TestClient

from service.store import SqlStore
from tests.service.api.conftest import decide

SURROGATE = '"a\\ud800b"'  # JSON text of a string holding a lone surrogate


def post_raw(client: TestClient, url: str, body: str) -> int:
    response = client.post(url, content=body.encode(), headers={"Content-Type": "application/json"})
    assert response.status_code < 500, response.text
    return response.status_code


@pytest.mark.parametrize("field", ["text", "external_id", "label", "metadata_value", "metadata_key"])
def test_a_lone_surrogate_anywhere_in_an_ingest_is_422(client: TestClient, project: str, store: SqlStore,
                                                        field: str) -> None:
    item = {"external_id": '"x1"', "data": {"text": '"hi"', "metadata": '{"k": "v"}'}, "label": "null"}
    if field == "text":
        item["data"]["text"] = SURROGATE
    elif field == "external_id":
        item["external_id"] = SURROGATE
    elif field == "label":
        item["label"] = SURROGATE
    elif field == "metadata_value":
        item["data"]["metadata"] = '{"k": ' + SURROGATE + "}"
    else:
        item["data"]["metadata"] = "{" + SURROGATE + ': 1}'
    body = ('{"items": [{"external_id": ' + item["external_id"] + ', "label": ' + item["label"] + ', "data": '
            '{"text": ' + item["data"]["text"] + ', "metadata": ' + item["data"]["metadata"] + "}}]}")
    assert post_raw(client, f"/projects/{project}/items", body) == 422
    assert store.items.count_items(project)["pending"] == 0


def test_surrogates_in_reviewer_and_policy_reason_are_422(client: TestClient, project: str, store: SqlStore) -> None:
    decide(store, project, ["escalate"])
    assert post_raw(client, f"/projects/{project}/reviews/claim", '{"reviewer": ' + SURROGATE + "}") == 422
    assert post_raw(client, f"/projects/{project}/policies/1/activate", '{"reason": ' + SURROGATE + "}") == 422
    # a valid pair is valid Unicode and goes through
    assert post_raw(client, f"/projects/{project}/reviews/claim", '{"reviewer": "a\\ud83d\\ude00b"}') == 200


def test_deeply_nested_json_is_a_small_422(client: TestClient, project: str) -> None:
    for depth in (40, 500, 990, 5000, 100_000):
        nested = "[" * depth + "]" * depth
        body = '{"items": [{"external_id": "d", "data": {"metadata": {"deep": ' + nested + "}}}]}"
        response = client.post(f"/projects/{project}/items", content=body.encode(),
                               headers={"Content-Type": "application/json"})
        assert response.status_code == 422, (depth, response.status_code)
        assert len(response.content) < 5000


def test_metadata_size_is_bounded(client: TestClient, project: str) -> None:
    big = {"blob": "x" * 300_000}  # over the 256 KiB metadata limit
    response = client.post(f"/projects/{project}/items", json={"items": [{"external_id": "big",
                                                                           "data": {"metadata": big}}]})
    assert response.status_code == 422 and "over the limit" in response.text
    many = {"k": list(range(200_000))}
    response = client.post(f"/projects/{project}/items", json={"items": [{"external_id": "many",
                                                                           "data": {"metadata": many}}]})
    assert response.status_code == 422


def test_undecodable_utf8_is_a_documented_422(client: TestClient, project: str) -> None:
    response = client.post(f"/projects/{project}/items", content=b'{"items": [{"external_id": "\xff\xfe"}]}',
                           headers={"Content-Type": "application/json"})
    assert response.status_code == 422 and "UTF-8" in response.text
    assert "422" in client.get("/openapi.json").json()["paths"]["/projects/{project}/items"]["post"]["responses"]


def test_a_cursor_with_unicode_digits_is_422(client: TestClient, project: str) -> None:
    for text in ("labels:²", "labels:١٢", "labels:𝟙"):
        cursor = base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")
        response = client.get(f"/projects/{project}/labels", params={"cursor": cursor})
        assert response.status_code == 422, (text, response.text)
