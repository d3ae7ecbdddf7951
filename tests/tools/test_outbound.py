"""The retry loop and circuit breaker every outbound tool call goes through (tools/outbound.py)."""

from __future__ import annotations

import asyncio
import json

import httpx
import pytest

from policies.exceptions import ToolError
from tools import outbound
from tools.outbound import MAX_RETRY_AFTER, Caller, CircuitBreaker, RetryPolicy, request_with_retries


def _caller(breaker: CircuitBreaker, retries: int = 2) -> Caller:
    return Caller(breaker, RetryPolicy(retries, backoff_seconds=0.5, timeout_seconds=3.0),
                  unavailable="svc unavailable", describe=lambda r: f"HTTP {r.status_code}",
                  refuse=lambda r, why: ToolError(f"svc refused: {why}"))


def _run(responses: list[httpx.Response | Exception], caller: Caller,
         monkeypatch: pytest.MonkeyPatch) -> tuple[object, list[float], int]:
    """Send through a transport answering ``responses`` in order; returns (result or error, sleeps, requests)."""
    sleeps: list[float] = []
    sent = 0

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal sent
        answer = responses[sent]
        sent += 1
        if isinstance(answer, Exception):
            raise answer
        return answer

    monkeypatch.setattr(outbound.asyncio, "sleep", fake_sleep)

    async def go() -> object:
        async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
            try:
                return await request_with_retries(lambda: client.get("http://svc.test/x"), lambda r: r.json(), caller)
            except ToolError as exc:
                return exc

    return asyncio.run(go()), sleeps, sent


def test_retries_5xx_and_429_with_backoff_and_honours_retry_after(monkeypatch: pytest.MonkeyPatch) -> None:
    breaker = CircuitBreaker(failures=10, reset_seconds=60)
    answers = [httpx.Response(503), httpx.Response(429, headers={"Retry-After": "7"}), httpx.Response(200, json=[1])]
    result, sleeps, sent = _run(answers, _caller(breaker), monkeypatch)
    assert result == [1] and sent == 3
    assert sleeps == [0.5, 7.0]  # backoff 0.5 * 2**0, then Retry-After beats 0.5 * 2**1
    assert breaker.consecutive == 0 and breaker.state == "closed"


def test_retry_after_is_capped_and_garbage_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    answers = [httpx.Response(503, headers={"Retry-After": "86400"}),
               httpx.Response(503, headers={"Retry-After": "soon"}), httpx.Response(200, json={})]
    result, sleeps, _ = _run(answers, _caller(CircuitBreaker(10, 60)), monkeypatch)
    assert result == {} and sleeps == [MAX_RETRY_AFTER, 1.0]


def test_gives_up_after_max_retries_with_the_last_reason(monkeypatch: pytest.MonkeyPatch) -> None:
    answers: list[httpx.Response | Exception] = [httpx.Response(500), httpx.ConnectError("refused"),
                                                  httpx.ReadTimeout("slow")]
    result, _, sent = _run(answers, _caller(CircuitBreaker(10, 60), retries=2), monkeypatch)
    assert isinstance(result, ToolError) and sent == 3
    assert str(result) == "svc unavailable: timeout after 3s (3 attempts)"


def test_other_statuses_are_refused_at_once(monkeypatch: pytest.MonkeyPatch) -> None:
    breaker = CircuitBreaker(10, 60)
    result, sleeps, sent = _run([httpx.Response(404)], _caller(breaker), monkeypatch)
    assert isinstance(result, ToolError) and str(result) == "svc refused: HTTP 404"
    assert sent == 1 and sleeps == [] and breaker.consecutive == 1


def test_an_unusable_body_is_a_failure_of_the_call(monkeypatch: pytest.MonkeyPatch) -> None:
    breaker = CircuitBreaker(10, 60)
    caller = _caller(breaker)

    def accept(response: httpx.Response) -> object:
        try:
            return json.loads(response.content)
        except ValueError:
            raise ToolError("svc: not JSON") from None

    async def go() -> object:
        transport = httpx.MockTransport(lambda _r: httpx.Response(200, content=b"<html>"))
        async with httpx.AsyncClient(transport=transport) as client:
            return await request_with_retries(lambda: client.get("http://svc.test/"), accept, caller)

    with pytest.raises(ToolError, match="svc: not JSON"):
        asyncio.run(go())
    assert breaker.consecutive == 1 and breaker.last_error == "svc: not JSON"


def test_open_breaker_refuses_before_sending(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [0.0]
    breaker = CircuitBreaker(failures=2, reset_seconds=10, clock=lambda: now[0])
    result, _, sent = _run([httpx.Response(502), httpx.Response(502)], _caller(breaker, retries=5), monkeypatch)
    assert isinstance(result, ToolError) and str(result).startswith("circuit open after 2 consecutive failures")
    assert sent == 2  # the third attempt never reached the transport
    now[0] = 10.0  # half-open: one trial goes through and closes the breaker
    result, _, sent = _run([httpx.Response(200, json=1)], _caller(breaker), monkeypatch)
    assert result == 1 and sent == 1 and breaker.state == "closed"
