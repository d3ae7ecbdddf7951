"""HTTP plumbing shared by the tools that call other services: a circuit breaker and one retry loop.

Every outbound call of a tool (the Open-Meteo client, a remote model) goes through
:func:`request_with_retries`: the breaker is checked before each attempt; 5xx, 429 and transport errors are
retried with exponential backoff (``Retry-After`` honoured, capped at ``MAX_RETRY_AFTER``); any other status
fails at once. Every failure is a :class:`ToolError` whose message says why, so the agent can go on with
the other tools and the evidence can say what happened. No response body is ever put in an error message (it
would reach the evidence): a refusal says only the status.

Egress: tools send their requests through :class:`GuardedTransport`, the same SSRF guard as image fetching
(``tools.fetch.check_url``: every resolved address checked, the connection pinned to the checked IP, no redirects
followed), and may only call endpoints the deployment allows (:func:`endpoint_allowed`,
:func:`check_policy_endpoints`).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TypeVar

import httpx

from policies.exceptions import PolicyError, ToolError
from policies.model import LLMSpec, Policy, RemoteModelSpec, WeatherSpec
from tools.fetch import check_url

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


def _parts(url: str) -> tuple[str, str, int, str] | None:
    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError):
        return None
    if parsed.scheme not in ("http", "https") or not parsed.host:
        return None
    port = parsed.port or (443 if parsed.scheme == "https" else 80)
    return parsed.scheme, parsed.host.lower(), port, parsed.path.rstrip("/")


def endpoint_allowed(url: str, allowed: tuple[str, ...]) -> bool:
    """``url`` is one of ``allowed`` or below one (same scheme, host and port; path equal or a sub-path). Credentials
    in ``url`` (a Label Studio ML backend's Basic password) do not matter: they go only where the URL points."""
    mine = _parts(url)
    if mine is None:
        return False
    for entry in allowed:
        other = _parts(entry)
        if other is not None and mine[:3] == other[:3] and (mine[3] == other[3] or
                                                            mine[3].startswith(other[3] + "/")):
            return True
    return False


def same_endpoint(url: str | None, other: str | None) -> bool:
    """Both URLs name the same endpoint (scheme, host, port and path; a trailing slash aside)."""
    if not url or not other:
        return False
    a, b = _parts(url), _parts(other)
    return a is not None and a == b


def policy_endpoints(policy: Policy) -> list[tuple[str, str]]:
    """(tool name, URL) of every endpoint the policy's tools name themselves."""
    out: list[tuple[str, str]] = []
    for spec in policy.tools:
        urls: list[str | None] = []
        if isinstance(spec, RemoteModelSpec):
            urls = [spec.url]
        elif isinstance(spec, LLMSpec):
            urls = [spec.base_url]
        elif isinstance(spec, WeatherSpec):
            urls = [spec.archive_url, spec.forecast_url]
        out += [(spec.name, url) for url in urls if url]
    return out


def check_policy_endpoints(policy: Policy, allowed: tuple[str, ...]) -> None:
    """PolicyError naming each tool endpoint of ``policy`` that the deployment does not allow."""
    refused = [f"tool {name!r}: {url}" for name, url in policy_endpoints(policy) if not endpoint_allowed(url, allowed)]
    if refused:
        raise PolicyError("policy names tool endpoints this deployment does not allow (" + "; ".join(refused) +
                          "); an operator adds allowed endpoints to LABELAGENT_TOOL_ENDPOINTS")


def require_allowed(name: str, url: str, allowed: tuple[str, ...]) -> None:
    """ToolError when a tool is built with an endpoint the deployment does not allow."""
    if not endpoint_allowed(url, allowed):
        raise ToolError(f"tool {name!r}: endpoint {url} is not allowed by this deployment "
                        "(LABELAGENT_TOOL_ENDPOINTS)")


class GuardedTransport(httpx.AsyncBaseTransport):
    """An httpx transport that sends each request only after the SSRF guard passed it, to the checked IP.

    ``allow``: ``host`` / ``host:port`` entries exempt from the private-address check (the deployment's allowed
    endpoints). Redirects are not followed by the clients using it (httpx's default)."""

    def __init__(self, allow: frozenset[str], inner: httpx.AsyncBaseTransport | None = None) -> None:
        self.allow = frozenset(a.lower() for a in allow)
        self.inner = inner or httpx.AsyncHTTPTransport()

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        url = request.url  # httpx already turned any credentials of the URL into the Authorization header
        ip = await check_url(url.copy_with(username=None, password=None) if url.userinfo else url, self.allow)
        request.url = url.copy_with(host=str(ip))
        if url.scheme == "https":
            request.extensions = {**request.extensions, "sni_hostname": url.raw_host.decode("ascii")}
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()
