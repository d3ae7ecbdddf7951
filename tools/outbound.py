"""HTTP plumbing shared by the tools that call other services: a circuit breaker and one retry loop.

Every outbound call of a tool (the Open-Meteo client, a remote model) goes through
:func:`request_with_retries`: the breaker is checked before each attempt; 5xx, 429 and transport errors are
retried with exponential backoff (``Retry-After`` honoured, capped at ``MAX_RETRY_AFTER``); any other status
fails at once. Every failure is a :class:`ToolError` whose message says why, so the agent can go on with
the other tools and the evidence can say what happened.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import httpx

from policies.exceptions import ToolError

RETRY_STATUS = frozenset({429, 500, 502, 503, 504})
MAX_RETRY_AFTER = 30.0

T = TypeVar("T")


class CircuitBreaker:
    """Closed -> open after ``failures`` consecutive failures -> one trial after ``reset_seconds``."""

    def __init__(self, failures: int, reset_seconds: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.failures = failures
        self.reset_seconds = reset_seconds
        self.clock = clock
        self.consecutive = 0
        self.opened_at: float | None = None
        self.last_error = ""
        self._trial = False

    @property
    def state(self) -> str:
        if self.opened_at is None:
            return "closed"
        return "half-open" if self.clock() - self.opened_at >= self.reset_seconds else "open"

    def check(self) -> None:
        """Raise while open; in half-open state let exactly one trial request through."""
        state = self.state
        if state == "closed":
            return
        if state == "half-open" and not self._trial:
            self._trial = True
            return
        raise ToolError(f"circuit open after {self.consecutive} consecutive failures (last: {self.last_error})")

    def success(self) -> None:
        self.consecutive = 0
        self.opened_at = None
        self._trial = False

    def failure(self, reason: str) -> None:
        self.consecutive += 1
        self.last_error = reason
        if self._trial or self.consecutive >= self.failures:
            self.opened_at = self.clock()
        self._trial = False


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    max_retries: int  # attempts after the first
    backoff_seconds: float  # delay before retry n is backoff * 2**(n-1), or Retry-After when longer
    timeout_seconds: float  # the client's timeout, named in the error message


@dataclass(frozen=True, slots=True)
class Caller:
    """What a retry loop needs to know about the service it calls, and how it words failures.

    ``accept`` turns a 200 response into the result (raising :class:`ToolError` when its body is unusable);
    ``describe`` words a non-200 response for the breaker and the messages; ``refuse`` builds the error
    for a status that is not retried; ``unavailable`` prefixes the error once the retries are spent.
    """

    breaker: CircuitBreaker
    retry: RetryPolicy
    unavailable: str
    describe: Callable[[httpx.Response], str]
    refuse: Callable[[httpx.Response, str], ToolError]


async def request_with_retries(send: Callable[[], Awaitable[httpx.Response]], accept: Callable[[httpx.Response], T],
                               caller: Caller, on_attempt: Callable[[], None] | None = None) -> T:
    """``accept(await send())`` once a 200 arrives, retrying as the module docstring says."""
    breaker, retry = caller.breaker, caller.retry
    attempt = 0
    while True:
        breaker.check()
        if on_attempt is not None:
            on_attempt()
        delay = retry.backoff_seconds * (2**attempt)
        try:
            response = await send()
        except httpx.TimeoutException:
            reason = f"timeout after {retry.timeout_seconds:g}s"
        except httpx.HTTPError as exc:
            reason = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
        else:
            if response.status_code == 200:
                try:
                    result = accept(response)
                except ToolError as exc:
                    breaker.failure(str(exc))
                    raise
                breaker.success()
                return result
            reason = caller.describe(response)
            if response.status_code not in RETRY_STATUS:
                breaker.failure(reason)
                raise caller.refuse(response, reason)
            delay = max(delay, retry_after(response))
        breaker.failure(reason)
        if attempt >= retry.max_retries:
            raise ToolError(f"{caller.unavailable}: {reason} ({attempt + 1} attempts)")
        attempt += 1
        if delay > 0:
            await asyncio.sleep(delay)


def retry_after(response: httpx.Response) -> float:
    """The response's ``Retry-After`` in seconds (0 when absent or not a number), capped."""
    try:
        return min(max(float(response.headers.get("retry-after", "0")), 0.0), MAX_RETRY_AFTER)
    except ValueError:
        return 0.0
