"""Finding 6 of issue 17: idempotency reservations expire, /events ends when its key is revoked, CSV cells are
neutralised against formula injection, unknown keys are rate limited, 405 and OPTIONS answer with ``Allow``."""

from __future__ import annotations

import csv
import io
import threading
from datetime import timedelta

from fastapi import FastAPI
from fastapi.testclient import TestClient

from service.api.app import create_app
from service.store import SqlStore
from service.store.tables import utcnow
from tests.service.api.conftest import auth, decide


def test_an_idempotency_key_left_running_by_a_dead_process_becomes_retryable(client: TestClient, project: str,
                                                                              store: SqlStore) -> None:
    body = {"items": [{"external_id": "i1", "data": {"text": "hello"}}]}
    store.projects.reserve_idempotent(project, "k-dead", "whatever", now=utcnow() - timedelta(hours=2))  # then it died
    response = client.post(f"/projects/{project}/items", json=body, headers={"Idempotency-Key": "k-dead"})
    assert response.status_code == 200, response.text
    assert response.json()["inserted"] == ["i1"]
    store.projects.reserve_idempotent(project, "k-live", "whatever")  # one still running now: a retry must wait
    response = client.post(f"/projects/{project}/items", json=body, headers={"Idempotency-Key": "k-live"})
    assert response.status_code == 409


def test_an_event_stream_ends_when_its_key_is_revoked(app: FastAPI, store: SqlStore, project: str) -> None:
    decide(store, project, ["accept"])
    app.state.settings = app.state.settings.model_copy(update={"events_recheck_seconds": 0.05})
    key, record = store.projects.create_key(name="feed", role="ingest")
    lines: list[str] = []

    def follow() -> None:
        with TestClient(app, headers=auth(key)) as client, client.stream("GET", f"/projects/{project}/events") as r:
            for line in r.iter_lines():
                lines.append(line)
                if line.startswith("data:"):
                    store.projects.revoke_key(record.prefix)

    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    reader.join(60)
    assert not reader.is_alive(), "the stream went on after its key was revoked"
    assert sum(line.startswith("data:") for line in lines) == 1


def test_csv_cells_cannot_run_as_formulas(client: TestClient, project: str, store: SqlStore) -> None:
    keys = decide(store, project, ["accept", "accept"], prefix="=HYPERLINK(\"http://x\")")
    keys += decide(store, project, ["accept"], start=5, prefix="+cmd|' /C calc'!A")
    text = client.get(f"/projects/{project}/labels", params={"format": "csv"}).text
    rows = list(csv.DictReader(io.StringIO(text)))
    assert sorted(r["external_id"] for r in rows) == sorted("'" + k for k in keys)  # shown as text, never run
    assert all(r["label"] in ("ham", "spam") for r in rows)


def test_unknown_keys_are_rate_limited(store: SqlStore, project: str) -> None:
    app = create_app(store.settings.model_copy(update={"rate_limit_per_second": 0.01, "rate_limit_burst": 3}),
                     store=store)
    with TestClient(app, raise_server_exceptions=False) as client:
        statuses = [client.get("/projects", headers=auth(f"la_guess{i}_xxxxxxxx")).status_code for i in range(6)]
    assert statuses[:3] == [401] * 3 and 429 in statuses[3:]


def test_options_and_405_say_what_is_allowed(client: TestClient, project: str) -> None:
    response = client.options("/projects")
    assert response.status_code == 204
    assert {m.strip() for m in response.headers["allow"].split(",")} >= {"GET", "POST", "OPTIONS"}
    response = client.delete("/projects")
    assert response.status_code == 405
    assert {m.strip() for m in response.headers["allow"].split(",")} >= {"GET", "POST"}
    assert client.options("/nowhere").status_code == 404
