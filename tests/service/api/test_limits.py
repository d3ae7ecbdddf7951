"""Input limits (unknown fields, body size, batch size, text length, rate) and idempotent ingest, each with its status
code and message."""

from __future__ import annotations

import inspect
import json
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydantic import BaseModel

import service.api.schemas.common as common
import service.api.schemas.items
import service.api.schemas.policies
import service.api.schemas.projects
import service.api.schemas.reviews
from service.api.app import create_app
from service.api.ratelimit import RateLimiter
from service.store import SqlStore
from tests.service.api.conftest import auth, error_message


def items(*keys: str, text: str = "hello") -> list[dict[str, object]]:
    return [{"external_id": k, "data": {"text": text}} for k in keys]


def request_models() -> list[type[BaseModel]]:
    found = []
    for module in (service.api.schemas.items, service.api.schemas.policies, service.api.schemas.projects,
                   service.api.schemas.reviews):
        for _, obj in inspect.getmembers(module, inspect.isclass):
            if issubclass(obj, BaseModel) and obj.__name__.endswith(("Request", "In", "Data")):
                found.append(obj)
    return found


def test_every_request_model_forbids_unknown_fields() -> None:
    models = request_models()
    assert len(models) >= 10
    for model in models:
        assert issubclass(model, common.Request), f"{model.__name__} must derive from schemas.common.Request"
        assert model.model_config.get("extra") == "forbid", model.__name__


@pytest.mark.parametrize("field", ["status", "project", "policy_version", "attempts"])
def test_server_owned_fields_are_refused(client: TestClient, project: str, field: str) -> None:
    body = {"items": [{"external_id": "a", "data": {"text": "x"}, field: "labeled"}]}
    response = client.post(f"/projects/{project}/items", json=body)
    assert response.status_code == 422
    assert response.json()["detail"][0]["type"] == "extra_forbidden"
    assert response.json()["detail"][0]["loc"] == ["body", "items", 0, field]


def test_text_length_limit(client: TestClient, store: SqlStore, project: str) -> None:
    limit = store.settings.max_text_chars
    response = client.post(f"/projects/{project}/items", json={"items": items("a", "b", text="x" * (limit + 1))})
    assert (response.status_code, error_message(response)) == (
        422, f"items[0].data.text has {limit + 1} characters; at most {limit} are accepted")
    assert store.items.count_items(project)["pending"] == 0


def test_batch_size_limit_message(client: TestClient, store: SqlStore, project: str) -> None:
    n = store.settings.max_batch_items + 1
    response = client.post(f"/projects/{project}/items", json={"items": items(*(f"k{i}" for i in range(n)))})
    assert (response.status_code, error_message(response)) == (
        422, f"{n} items in one call; send at most {n - 1} per call")


@pytest.fixture
def small_app(store: SqlStore) -> FastAPI:
    return create_app(store.settings.model_copy(update={"max_body_bytes": 2048, "rate_limit_per_second": 0}),
                      store=store)


def test_body_over_the_limit_is_refused_from_its_content_length(small_app: FastAPI, operator_key: str,
                                                                 project: str) -> None:
    with TestClient(small_app, headers=auth(operator_key)) as client:
        response = client.post(f"/projects/{project}/items", json={"items": items("a", text="x" * 4000)})
        assert (response.status_code, error_message(response)) == (
            413, "the request body is larger than the 2048 bytes this server accepts")
        assert client.post(f"/projects/{project}/items", json={"items": items("a")}).status_code == 200


def test_chunked_body_is_refused_once_past_the_limit() -> None:
    """No Content-Length: the middleware stops reading at the first chunk past the limit (the rest is never read,
    the app never runs)."""
    import asyncio

    from service.api.limits import BodyLimitMiddleware

    read: list[int] = []
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        read.append(1)
        return {"type": "http.request", "body": b" " * 1000, "more_body": len(read) < 100}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    async def app(scope: object, receive: object, send: object) -> None:
        raise AssertionError("the app must not run")

    scope = {"type": "http", "method": "POST", "path": "/", "headers": [(b"transfer-encoding", b"chunked")]}
    asyncio.run(BodyLimitMiddleware(app, max_bytes=2048)(scope, receive, send))  # type: ignore[arg-type]
    assert len(read) == 3 and sent[0]["status"] == 413
    assert json.loads(sent[1]["body"]) == {"error": {"type": "too_large", "message": "the request body is larger "  # type: ignore[arg-type]
                                                     "than the 2048 bytes this server accepts"}}


def test_rate_limit_answers_429_with_retry_after(store: SqlStore, operator_key: str, project: str) -> None:
    app = create_app(store.settings.model_copy(update={"rate_limit_per_second": 0.5, "rate_limit_burst": 3}),
                     store=store)
    with TestClient(app, headers=auth(operator_key)) as client:
        codes = [client.get("/projects").status_code for _ in range(3)]
        response = client.get("/projects")
        other = store.projects.create_key(name="other", role="reviewer")[0]
        assert client.get("/projects", headers=auth(other)).status_code == 200  # buckets are per key
        assert client.get("/health").status_code == 200  # no key, no limit
    assert codes == [200, 200, 200]
    assert (response.status_code, error_message(response)) == (429, "rate limit of this API key exceeded; "
                                                                    "retry after 2 s")
    assert response.headers["Retry-After"] == "2"


def test_token_bucket_refills_with_time() -> None:
    now = [0.0]
    limiter = RateLimiter(rate=2.0, burst=2, clock=lambda: now[0])
    assert [limiter.acquire("k") for _ in range(3)] == [0, 0, 1]
    now[0] += 0.5
    assert limiter.acquire("k") == 0
    assert RateLimiter(rate=0, burst=1).acquire("k") == 0  # disabled


# --- idempotency -----------------------------------------------------------------------------------------------


def test_idempotency_key_replays_the_first_answer(client: TestClient, store: SqlStore, project: str) -> None:
    url, headers = f"/projects/{project}/items", {"Idempotency-Key": "batch-1"}
    first = client.post(url, json={"items": items("a", "b")}, headers=headers)
    assert first.json() == {"inserted": ["a", "b"], "duplicates": []}
    again = client.post(url, json={"items": items("a", "b")}, headers=headers)
    assert (again.status_code, again.json()) == (200, first.json())  # not "duplicates": the first answer
    other = client.post(url, json={"items": items("a", "c")}, headers=headers)
    assert (other.status_code, error_message(other)) == (
        409, "Idempotency-Key 'batch-1' was already used with a different request body; send a new key for a new "
             "request")
    assert store.items.count_items(project)["pending"] == 2  # 'c' was not stored


def test_a_failed_request_gives_its_idempotency_key_back(client: TestClient, store: SqlStore, project: str) -> None:
    url, headers = f"/projects/{project}/items", {"Idempotency-Key": "k"}
    too_long = "x" * (store.settings.max_text_chars + 1)
    assert client.post(url, json={"items": items("a", text=too_long)}, headers=headers).status_code == 422
    assert client.post(url, json={"items": items("a")}, headers=headers).json()["inserted"] == ["a"]


def test_idempotency_keys_are_per_project(client: TestClient, store: SqlStore, project: str) -> None:
    from tests.factories import make_policy

    store.projects.create_project("other", make_policy("other"))
    for name in (project, "other"):
        response = client.post(f"/projects/{name}/items", json={"items": items("a")}, headers={"Idempotency-Key": "x"})
        assert response.json()["inserted"] == ["a"]


@pytest.mark.parametrize("use_key", [False, True])
def test_concurrent_ingest_of_one_external_id_stores_one_item(app: FastAPI, store: SqlStore, project: str,
                                                              operator_key: str, use_key: bool) -> None:
    """Sixteen clients send the same item at once (threads over the ASGI app): one item, inserted exactly once."""
    transport = httpx.ASGITransport(app=app)
    body = json.dumps({"items": items("same")})
    headers = {**auth(operator_key), "content-type": "application/json"}
    if use_key:
        headers["Idempotency-Key"] = "one"

    def send(_: int) -> tuple[int, dict[str, object]]:
        import asyncio

        async def go() -> httpx.Response:
            async with httpx.AsyncClient(transport=transport, base_url="http://test") as c:
                return await c.post(f"/projects/{project}/items", content=body, headers=headers)

        response = asyncio.run(go())
        return response.status_code, response.json()

    with ThreadPoolExecutor(16) as pool:
        results = list(pool.map(send, range(16)))
    ok = [body for status, body in results if status == 200]
    assert {status for status, _ in results} <= {200, 409}
    if use_key:  # a concurrent retry is told the first one is still running; the others see its answer
        conflicts = [body for status, body in results if status == 409]
        assert all("is still running" in b["error"]["message"] for b in conflicts)  # type: ignore[index]
        assert all(b == {"inserted": ["same"], "duplicates": []} for b in ok)
    else:
        assert sum(b["inserted"] == ["same"] for b in ok) == 1  # type: ignore[index]
    assert store.items.count_items(project)["pending"] == 1
