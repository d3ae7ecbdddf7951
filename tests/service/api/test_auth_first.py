"""Authentication and the role check come before the body is read (finding 3 of issue 17): an unauthenticated
malformed body is a 401, a forbidden role's bad body a 403, and neither request has its body received at all."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from fastapi import FastAPI
from fastapi.testclient import TestClient

from service.store import SqlStore
from tests.service.api.conftest import auth


def test_an_unauthenticated_malformed_body_is_401(anonymous: TestClient, project: str) -> None:
    response = anonymous.post("/projects", content=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 401, response.text
    response = anonymous.post(f"/projects/{project}/items", json={"items": "wrong"},
                              headers={"Authorization": "Bearer nope"})
    assert response.status_code == 401, response.text


def test_a_forbidden_roles_bad_body_is_403(app: FastAPI, store: SqlStore, project: str) -> None:
    key = store.projects.create_key(name="r", role="reviewer")[0]
    with TestClient(app, raise_server_exceptions=False, headers=auth(key)) as reviewer:
        response = reviewer.post("/projects", content=b"\xff{", headers={"Content-Type": "application/json"})
        assert response.status_code == 403, response.text
        response = reviewer.post(f"/projects/{project}/items", json={"bogus": 1})
        assert response.status_code == 403, response.text


def _call(app: FastAPI, path: str, headers: list[tuple[bytes, bytes]]) -> tuple[int, int]:
    """(status, how many times the app asked for the body) of a POST whose body is never sent."""
    asked = 0
    status = 0

    async def receive() -> dict[str, Any]:
        nonlocal asked
        asked += 1
        return {"type": "http.request", "body": json.dumps({"items": []}).encode(), "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    scope = {"type": "http", "method": "POST", "path": path, "raw_path": path.encode(), "query_string": b"",
             "headers": [(b"content-type", b"application/json"), (b"content-length", b"15"), *headers],
             "client": ("127.0.0.1", 1234), "server": ("test", 80), "scheme": "http", "root_path": "",
             "http_version": "1.1", "app": app}
    asyncio.run(app(scope, receive, send))  # type: ignore[arg-type]
    return status, asked


def test_the_body_is_not_received_before_authentication(app: FastAPI, store: SqlStore, project: str) -> None:
    with TestClient(app):  # runs the lifespan
        assert _call(app, f"/projects/{project}/items", []) == (401, 0)
        assert _call(app, f"/projects/{project}/items", [(b"authorization", b"Bearer wrong")]) == (401, 0)
        reviewer = store.projects.create_key(name="r", role="reviewer")[0]
        assert _call(app, f"/projects/{project}/items", [(b"authorization", f"Bearer {reviewer}".encode())]) == (403, 0)


def _refusal_headers(app: FastAPI, path: str, length: bytes) -> dict[bytes, bytes]:
    """The response headers of an unauthenticated POST that announces ``length`` bytes and never sends them."""
    sent: dict[bytes, bytes] = {}

    async def receive() -> dict[str, Any]:
        raise AssertionError("the body was asked for")

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            assert message["status"] == 401
            sent.update(dict(message["headers"]))

    scope = {"type": "http", "method": "POST", "path": path, "raw_path": path.encode(), "query_string": b"",
             "headers": [(b"content-type", b"application/json"), (b"content-length", length)],
             "client": ("127.0.0.1", 1234), "server": ("test", 80), "scheme": "http", "root_path": "",
             "http_version": "1.1", "app": app}
    asyncio.run(app(scope, receive, send))  # type: ignore[arg-type]
    return sent


def test_refusing_a_large_body_closes_the_connection(app: FastAPI, project: str) -> None:
    """Kept alive, the server would read (and discard) all 16 MiB of an unauthenticated body on its event loop."""
    with TestClient(app):
        large = _refusal_headers(app, f"/projects/{project}/items", str(16 * 2**20).encode())
        small = _refusal_headers(app, f"/projects/{project}/items", b"100")
    assert large.get(b"connection") == b"close"
    assert b"connection" not in small  # a small body is read cheaply: the connection stays usable
    assert large[b"www-authenticate"] == small[b"www-authenticate"] == b"Bearer"
