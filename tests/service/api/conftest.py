"""Fixtures for the HTTP API: the app over the parametrised store (SQLite and PostgreSQL), a TestClient that sends an
operator key (no rate limit), a feedback sink that records what it was told, and helpers that put decided items in
the store without a worker."""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from policies import Policy
from service.api.app import create_app
from service.store import SqlStore
from tests.factories import make_batch_result, make_items


class RecordingSink:
    """A FeedbackSink that remembers the projects it was told about."""

    def __init__(self) -> None:
        self.projects: list[str] = []

    def notify(self, project: str) -> None:
        self.projects.append(project)


@pytest.fixture
def sink() -> RecordingSink:
    return RecordingSink()


@pytest.fixture
def app(store: SqlStore, sink: RecordingSink) -> FastAPI:
    app = create_app(store.settings.model_copy(update={"rate_limit_per_second": 0}), store=store, feedback=sink)
    app.state.events_poll_seconds = 0.01
    return app


@pytest.fixture
def operator_key(store: SqlStore) -> str:
    """An operator key for every project."""
    return store.projects.create_key(name="tests", role="operator")[0]


def auth(key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {key}"}


@pytest.fixture
def client(app: FastAPI, operator_key: str) -> Iterator[TestClient]:
    with TestClient(app, raise_server_exceptions=False, headers=auth(operator_key)) as client:
        yield client


@pytest.fixture
def anonymous(app: FastAPI) -> Iterator[TestClient]:
    """A client without any key."""
    with TestClient(app, raise_server_exceptions=False) as client:
        yield client


def decide(store: SqlStore, project: str, actions: Sequence[str], *, start: int = 0, prefix: str = "item",
           threshold: float | None = 0.9) -> list[str]:
    """Ingest one item per action and record the agent's decisions (labels alternate ham/spam). Returns the keys."""
    items = make_items(len(actions), start=start, prefix=prefix)
    store.items.ingest(project, items)
    token, claimed = store.items.claim_batch(project, worker="test", size=len(items))
    by_key = dict(zip([it.key for it in items], actions, strict=True))
    policy = store.projects.active_policy(project)
    result = make_batch_result(policy, claimed, [by_key[it.key] for it in claimed], threshold=threshold)
    store.items.record_batch(project, result, token)
    return [it.key for it in items]


def policy_json(policy: Policy, *, drop_version: bool = False) -> dict:
    data = policy.model_dump(mode="json")
    if drop_version:
        data.pop("version")
    return data


def error_message(response) -> str:  # type: ignore[no-untyped-def]
    body = response.json()
    assert set(body) == {"error"}, body
    return body["error"]["message"]
