"""Bad input never gets a 5xx: junk paths, wrong types, huge numbers, unknown fields, for every route of the schema
(new routes are covered automatically), against a project with items, labels and review tasks."""

from __future__ import annotations

import itertools
import re

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from service.api.deps import get_tool_factory
from service.store import SqlStore
from tests.factories import make_replay_summary
from tests.service.api.conftest import decide
from tests.service.api.tools import keyword_tools

JUNK_PATH = {
    "project": ["nope", "UPPER", "a%00b", "x" * 65, "%F0%9F%92%A5"],
    "task": ["0", "-1", "abc", "99999999999999999999", "2147483648", "1.5"],
    "version": ["0", "-3", "abc", "99999999999999999999", "1e3"],
    "backtest": ["0", "-1", "abc", "99999999999999999999", "2147483648", "1.5", "77"],
    "external_id": ["nope", "a%00b", "x" * 300, "..%2F..%2Fetc"],
}
JUNK_BODIES: list[object] = [
    None, [], "text", 12, {}, {"unknown": 1},
    {"reviewer": 10**30}, {"reviewer": ["a"]}, {"reviewer": "a\u0000"}, {"reviewer": "x" * 129},
    {"lease_token": None, "label": ["a"]}, {"lease_token": "a" * 65, "label": "ham"},
    {"lease_token": "tok\u0000", "label": "ham"}, {"lease_token": "abc", "label": "\u0000", "seconds": 10**20},
    {"items": [{"external_id": "a", "data": {"text": "x", "metadata": {"n": 10**400}}}]},
    {"items": [{"external_id": "a", "data": {"text": 5}}]}, {"items": {"a": 1}}, {"items": [None]},
    {"items": [{"external_id": "ok", "data": {"text": "x" * 100_000, "metadata": {"a": [[[[[[1]]]]]]}}}]},
    {"name": "p", "policy": 5}, {"name": "p", "policy": {"labels": "abc"}}, {"name": "p", "policy": "{{{"},
    {"name": "p", "policy": "project: p\nlabels: [a, a]\ntools: []"}, {"policy": [], "activate": 3},
    {"policy": {"tools": [{"kind": "lasers"}]}}, {"limit": -1, "batch_size": 0, "seed": -5},
    {"limit": 10**40}, {"reason": 5}, {"external_ids": ["a"] * 1001}, {"external_ids": "a"},
]
JUNK_QUERIES = [{"limit": "-1"}, {"limit": "1e9"}, {"offset": "-5"}, {"cursor": "%%%"}, {"format": "xml"},
                {"after": "99999999999999999999"}, {"status": "lost"}, {"kind": 3}, {"cursor": "bGFiZWxzOi0x"},
                {"before": "0"}, {"before": "99999999999999999999"}]
RAW_BODIES = [b"{", b'{"items": [', b"\xff\xfe", b'{"reviewer": NaN}', b'{"items": [{"external_id": "a", "data": '
              b'{"metadata": {"x": Infinity}}}]}', b"[" * 5000]


@pytest.fixture
def routes(client: TestClient) -> list[tuple[str, str]]:
    spec = client.get("/openapi.json").json()
    return [(method.upper(), path) for path, ops in spec["paths"].items() for method in ops]


@pytest.fixture
def seeded(app: FastAPI, store: SqlStore, project: str) -> dict[str, str]:
    app.dependency_overrides[get_tool_factory] = lambda: keyword_tools
    keys = decide(store, project, ["accept", "escalate", "audit", "escalate"])
    task = store.reviews.claim_review(project, reviewer="someone")
    assert task is not None
    backtest = store.audit.record_backtest(project, policy_version=1, active_version=1, actor="op", limit=1,
                                           batch_size=1,
                                     seed=0, ground_truth=0, candidate=make_replay_summary(),
                                     active=make_replay_summary())
    return {"project": project, "task": str(task.task_id), "version": "1", "external_id": keys[0],
            "backtest": str(backtest.id)}


def fill(path: str, values: dict[str, str]) -> str:
    return re.sub(r"\{(\w+)(?::path)?\}", lambda m: values[m.group(1)], path)


def check(response, where: str) -> None:  # type: ignore[no-untyped-def]
    assert response.status_code < 500, f"{where}: {response.status_code} {response.text[:300]}"
    if response.status_code >= 400 and response.status_code != 405:
        body = response.json()
        message = body.get("error", {}).get("message") if "error" in body else body.get("detail")
        assert message, where


def test_junk_paths_are_4xx(client: TestClient, routes: list[tuple[str, str]], seeded: dict[str, str]) -> None:
    for method, path in routes:
        names = re.findall(r"\{(\w+)", path)
        for name in names:
            for junk in JUNK_PATH[name]:
                url = fill(path, {**seeded, name: junk})
                response = client.request(method, url, json={"reviewer": "r", "lease_token": "abc", "label": "ham"}
                                          if method == "POST" else None)
                assert response.status_code >= 400, f"{method} {url} accepted"
                check(response, f"{method} {url}")


def test_junk_bodies_and_queries_are_4xx(client: TestClient, routes: list[tuple[str, str]],
                                          seeded: dict[str, str]) -> None:
    for method, path in routes:
        url = fill(path, seeded)
        if path.endswith("/events"):
            continue  # valid requests stream forever; its junk is covered by the path and header tests
        if method == "POST":
            for body in JUNK_BODIES:
                check(client.post(url, json=body), f"POST {url} {str(body)[:80]}")
            for raw in RAW_BODIES:
                check(client.post(url, content=raw, headers={"content-type": "application/json"}), f"POST {url} raw")
        for query in JUNK_QUERIES:
            check(client.request(method, url, params=query), f"{method} {url} {query}")


def test_junk_event_stream_requests(client: TestClient, seeded: dict[str, str]) -> None:
    url = f"/projects/{seeded['project']}/events"
    for header, query in itertools.product(["x", "-1", "1" * 30, ""], [{}, {"after": "-1"}]):
        if header == "" and not query:
            continue  # a valid request: it streams
        response = client.get(url, headers={"Last-Event-ID": header} if header else {}, params=query)
        check(response, f"GET {url} {header!r} {query}")
        assert response.status_code == 422
