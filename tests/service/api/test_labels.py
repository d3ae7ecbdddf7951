"""Labels out: the cursor-paginated export (JSONL and CSV) and the server-sent event stream."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from service.api.ops.labels import LabelFeed, encode_cursor
from service.store import ReviewAnswer, SqlStore
from service.store.base import label_t
from service.store.db import read_tx
from tests.service.api.conftest import decide, error_message


def label_ids(store: SqlStore) -> list[int]:
    with read_tx(store.engine) as conn:
        return list(conn.execute(select(label_t.c.id).order_by(label_t.c.id)).scalars())


def settle_all(store: SqlStore, project: str) -> None:
    tasks = store.reviews.claim_reviews(project, reviewer="oracle", limit=1000)
    store.reviews.submit_reviews([ReviewAnswer(t.task_id, t.token, "ham") for t in tasks], project=project)


@pytest.fixture
def labeled(store: SqlStore, project: str) -> list[str]:
    """23 agent labels and 7 human labels, interleaved in id order."""
    keys = decide(store, project, ["accept"] * 10 + ["escalate"] * 4)
    settle_all(store, project)
    keys += decide(store, project, ["accept"] * 13 + ["audit"] * 3, start=100)
    settle_all(store, project)
    return keys


def pages(client: TestClient, url: str, params: dict) -> Iterator[tuple[str, dict]]:
    response = client.get(url, params=params)
    while True:
        assert response.status_code == 200, response.text
        yield response.text, dict(response.headers)
        link = response.headers.get("link")
        if link is None:
            return
        response = client.get(re.fullmatch(r'<(.+)>; rel="next"', link).group(1))


@pytest.mark.parametrize("fmt", ["jsonl", "csv"])
def test_export_pages_round_trip_every_label_once(client: TestClient, project: str, store: SqlStore,
                                                  labeled: list[str], fmt: str) -> None:
    seen: list[dict] = []
    n_pages = 0
    for body, headers in pages(client, f"/projects/{project}/labels", {"format": fmt, "limit": 4}):
        n_pages += 1
        if fmt == "jsonl":
            assert headers["content-type"] == "application/x-ndjson"
            rows = [json.loads(line) for line in body.splitlines()]
        else:
            assert headers["content-type"] == "text/csv; charset=utf-8"
            rows = list(csv.DictReader(io.StringIO(body)))
        assert 1 <= len(rows) <= 4
        seen.extend(rows)
    assert n_pages == 8  # 30 labels, 4 per page
    assert [int(r["label_id"]) for r in seen] == label_ids(store)
    assert sorted({r["external_id"] for r in seen}) == sorted(labeled)
    sources = [r["source"] for r in seen]
    assert (sources.count("agent"), sources.count("human")) == (23, 7)
    first = seen[0]
    assert (first["label"], str(first["policy_version"]), first["external_id"]) == ("ham", "1", labeled[0])


def test_next_cursor_picks_up_new_labels(client: TestClient, project: str, store: SqlStore) -> None:
    decide(store, project, ["accept"] * 3)
    response = client.get(f"/projects/{project}/labels")
    assert len(response.text.splitlines()) == 3
    assert "link" not in response.headers  # nothing more for now
    cursor = response.headers["x-next-cursor"]
    assert client.get(f"/projects/{project}/labels", params={"cursor": cursor}).text == ""
    decide(store, project, ["accept"] * 2, start=10)
    again = client.get(f"/projects/{project}/labels", params={"cursor": cursor})
    assert [json.loads(line)["external_id"] for line in again.text.splitlines()] == ["item-000010", "item-000011"]


def test_export_bad_input(client: TestClient, project: str) -> None:
    url = f"/projects/{project}/labels"
    response = client.get(url, params={"cursor": "not-a-cursor"})
    assert response.status_code == 422
    assert error_message(response) == ("cursor is not valid; pass the X-Next-Cursor value of the previous page, or "
                                       "omit it to start from the first label")
    response = client.get(url, params={"format": "xml"})
    assert response.json()["detail"][0]["msg"] == "Input should be 'jsonl' or 'csv'"
    response = client.get(url, params={"limit": 10**12})
    assert response.json()["detail"][0]["msg"] == "Input should be less than or equal to 10000"
    response = client.get("/projects/nope/labels")
    assert (response.status_code, error_message(response)) == (404, "project 'nope' does not exist")
    assert client.get(url, params={"cursor": encode_cursor(10**6)}).text == ""


def read_events(client: TestClient, url: str, n: int, headers: dict | None = None) -> list[dict]:
    """The first ``n`` events of the stream, then the client hangs up."""
    events: list[dict] = []
    with client.stream("GET", url, headers=headers or {}) as response:
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        event: dict = {}
        for line in response.iter_lines():
            if line.startswith(":"):
                continue  # keep-alive
            if not line:
                if event:
                    events.append(event)
                    event = {}
                if len(events) == n:
                    break
                continue
            field, _, value = line.partition(": ")
            event[field] = json.loads(value) if field == "data" else value
    return events


def test_events_stream_labeled_items(client: TestClient, project: str, store: SqlStore, labeled: list[str]) -> None:
    ids = label_ids(store)
    events = read_events(client, f"/projects/{project}/events", 30)
    assert [int(e["id"]) for e in events] == ids
    assert {e["event"] for e in events} == {"label"}
    assert [e["data"]["label_id"] for e in events] == ids
    assert {e["data"]["external_id"] for e in events} == set(labeled)


def test_events_resume_after_last_event_id(client: TestClient, project: str, store: SqlStore,
                                           labeled: list[str]) -> None:
    ids = label_ids(store)
    events = read_events(client, f"/projects/{project}/events", 5, headers={"Last-Event-ID": str(ids[24])})
    assert [int(e["id"]) for e in events] == ids[25:]
    events = read_events(client, f"/projects/{project}/events?after={ids[27]}", 2)
    assert [int(e["id"]) for e in events] == ids[28:]


def test_events_include_labels_written_while_connected(client: TestClient, project: str, store: SqlStore) -> None:
    decide(store, project, ["accept"])
    got: list[str] = []
    with client.stream("GET", f"/projects/{project}/events") as response:
        lines = response.iter_lines()
        for line in lines:
            if line.startswith("data: "):
                got.append(json.loads(line[6:])["external_id"])
                if len(got) == 1:
                    decide(store, project, ["accept", "accept"], start=50)  # written while the client waits
                if len(got) == 3:
                    break
    assert got == ["item-000000", "item-000050", "item-000051"]


def test_events_bad_input(client: TestClient, project: str) -> None:
    response = client.get("/projects/nope/events")
    assert (response.status_code, error_message(response)) == (404, "project 'nope' does not exist")
    response = client.get(f"/projects/{project}/events", headers={"Last-Event-ID": "abc"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"] == ["header", "Last-Event-ID"]


class FakeStore:
    """Label ids as a test writes them: ``visible`` is what a reader would see now."""

    def __init__(self) -> None:
        self.visible: list[int] = []

    def label_ids_since(self, project: str, *, after_id: int, limit: int) -> list[int]:
        return sorted(i for i in self.visible if i > after_id)[:limit]

    def label_rows_by_id(self, project: str, ids: list[int]) -> list:  # type: ignore[type-arg]
        return [type("Row", (), {"id": i})() for i in sorted(ids)]


def test_feed_delivers_ids_committed_out_of_order_once() -> None:
    store, now = FakeStore(), [0.0]
    feed = LabelFeed(store, "p", lag_seconds=5.0, clock=lambda: now[0])  # type: ignore[arg-type]
    store.visible = [1, 2, 4]  # 3 is still being written
    assert [r.id for r in feed.poll()] == [1, 2, 4]
    now[0] = 1.0
    store.visible = [1, 2, 3, 4, 5]
    assert [r.id for r in feed.poll()] == [3, 5]
    now[0] = 10.0
    assert feed.poll() == []
    assert feed.floor == 5  # past the lag: ids up to 5 are settled
    store.visible.append(6)
    now[0] = 11.0
    assert [r.id for r in feed.poll()] == [6]
