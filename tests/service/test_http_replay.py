"""The HTTP replay's error paths, against the app in-process (httpx's ASGI transport, no worker, no socket)."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from policies import example_policy
from service.api.app import create_app
from service.offline.datasets import LabeledItem
from service.offline.http_replay import HttpReplayConfig, ReplayError, run_http_replay
from service.store import SqlStore
from tools.base import Item

ROWS = [LabeledItem(Item(f"row-{i:06d}", text, {}), label)
        for i, (text, label) in enumerate([("see you at lunch", "ham"), ("WIN a free prize now", "spam")] * 5)]


def replay(store: SqlStore, **config: object) -> dict:
    transport = httpx.ASGITransport(app=create_app(store=store))
    fields: dict[str, object] = {"url": "http://labelagent.test", "batch_size": 4, **config}
    return asyncio.run(run_http_replay(ROWS, example_policy("sms_spam"), HttpReplayConfig(**fields),  # type: ignore[arg-type]
                                       transport=transport))


def test_without_a_worker_the_replay_times_out_saying_what_is_missing(store: SqlStore) -> None:
    key, _ = store.projects.create_key(name="replay", role="operator")
    with pytest.raises(ReplayError) as caught:
        replay(store, api_key=key, timeout=0.5, project="lonely")
    message = str(caught.value)
    assert "timed out after 0.5s waiting for the previous batches in project 'lonely'" in message
    assert "0 labeled, 4 pending" in message and "Is a worker running" in message
    assert store.items.count_items("lonely")["pending"] == 4  # one batch in flight: the window held the rest back


def test_keys_and_projects_are_checked_with_a_hint(store: SqlStore) -> None:
    with pytest.raises(ReplayError, match=r"HTTP 401.*pass an operator API key with --api-key or LABELAGENT_KEY"):
        replay(store, api_key=None)
    ingest_key, _ = store.projects.create_key(name="ingest only", role="ingest")
    with pytest.raises(ReplayError, match=r"HTTP 403.*it needs an operator key"):
        replay(store, api_key=ingest_key)
    key, _ = store.projects.create_key(name="replay", role="operator")
    store.projects.create_project("taken", example_policy("sms_spam").model_copy(update={"project": "taken"}))
    with pytest.raises(ReplayError, match=r"project 'taken' already exists.*pass another --project"):
        replay(store, api_key=key, project="taken")
