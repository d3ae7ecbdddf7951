"""Authentication and the role check before any request body is read, and large JSON bodies parsed off the event loop.

:class:`AuthFirstMiddleware` (ASGI) finds the route a request is for; when the route is guarded by
:class:`service.api.deps.Allow`, it authenticates the key from the headers (401), charges its rate limit (429) and
checks the role (403) before a single byte of the body is received.
The principal it found is kept on the request's state,
so the route's own dependencies use it instead of authenticating (and charging) again. A refusal of a request with a
body over ``CLOSE_AFTER_REFUSAL_BYTES`` (or of unknown length) closes the connection: the server would otherwise read
the whole unread body to keep the connection alive. Routes without ``Allow``
(``/health``, the UI, the Label Studio routes with their own authentication) are passed through unchanged.

:class:`OffLoopRoute`, the route class of every API router, parses JSON bodies larger than ``OFF_LOOP_BYTES`` in a
worker thread: ``json.loads`` of a 16 MiB body holds the event loop for about a second.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import FastAPI, Request
from fastapi.routing import APIRoute
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from policies import LabelAgentError
from service.api.deps import Allow, authenticate_headers, check_role
from service.api.errors import error_response, headers_of, status_of, unexpected_error_handler
from service.api.schemas.common import MAX_JSON_DEPTH

OFF_LOOP_BYTES = 256 * 1024
BODY_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
CLOSE_AFTER_REFUSAL_BYTES = 1 << 20


def api_routes(app: FastAPI) -> list[APIRoute]:
    """Every APIRoute of the app with its full path (FastAPI versions that include routers lazily wrap them)."""
    try:
        from fastapi.routing import iter_route_contexts  # type: ignore[attr-defined,unused-ignore]
    except ImportError:
        return [r for r in app.routes if isinstance(r, APIRoute)]
    return [c.original_route for c in iter_route_contexts(app.routes) if isinstance(c.original_route, APIRoute)]


def _guard(route: APIRoute) -> Allow | None:
    return next((d.call for d in route.dependant.dependencies if isinstance(d.call, Allow)), None)


class AuthFirstMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app
        self._routes: list[tuple[APIRoute, Allow | None]] | None = None  # in the app's order, built on first use

    def _guard_of(self, app: FastAPI, scope: Scope) -> tuple[Allow, str] | None:
        """The ``Allow`` guarding the route ``scope`` is for, with the route's path; None when it has none."""
        if self._routes is None:
            self._routes = [(route, _guard(route)) for route in api_routes(app)]
        for route, allow in self._routes:
            match, _ = route.matches(scope)
            if match == Match.FULL:
                return (allow, route.path) if allow is not None else None
        return None

    def _methods_of(self, app: FastAPI, scope: Scope) -> tuple[bool, set[str]]:
        """(a route takes this method on this path, every method the routes of this path take)."""
        if self._routes is None:
            self._routes = [(route, _guard(route)) for route in api_routes(app)]
        methods: set[str] = set()
        full = False
        for route, _ in self._routes:
            match, _child = route.matches(scope)
            if match == Match.FULL:
                full = True
            if match in (Match.FULL, Match.PARTIAL):
                methods |= route.methods or set()
        return full, methods

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        fastapi_app: FastAPI = scope["app"]
        full, methods = self._methods_of(fastapi_app, scope)
        if methods and not full:  # the path exists, the method does not: 204 to OPTIONS, else 405, with Allow
            await _method_answer(scope["method"], methods)(scope, receive, send)
            return
        if scope["method"] not in BODY_METHODS:
            await self.app(scope, receive, send)
            return
        guard = self._guard_of(fastapi_app, scope)
        if guard is None:
            await self.app(scope, receive, send)
            return
        allow, path = guard
        request = Request(scope)  # headers only: the body is not touched
        try:
            principal = await authenticate_headers(request, allow.schemes)
            check_role(principal, allow.roles, f"{scope['method']} {path}")
        except LabelAgentError as exc:
            status, kind = status_of(exc)
            headers = dict(headers_of(exc) or {})
            if _large_unread_body(scope):  # else the server reads and discards it all on the event loop
                headers["Connection"] = "close"
            await error_response(status, kind, str(exc), headers)(scope, receive, send)
            return
        except Exception as exc:  # the database is down, ...: the same answer the app's handler gives
            await (await unexpected_error_handler(request, exc))(scope, receive, send)
            return
        scope.setdefault("state", {})["principal"] = principal
        await self.app(scope, receive, send)


def _large_unread_body(scope: Scope) -> bool:
    """A body over ``CLOSE_AFTER_REFUSAL_BYTES`` (or of unknown length) follows these headers: a refusal then closes
    the connection, instead of keeping it alive and reading the rest (16 MiB from each of 50 unauthenticated
    clients took the event loop from every other request)."""
    for name, value in scope.get("headers", []):
        if name == b"content-length":
            return not value.isdigit() or int(value) > CLOSE_AFTER_REFUSAL_BYTES
        if name == b"transfer-encoding":
            return True
    return False


def _method_answer(method: str, methods: set[str]) -> Response:
    allow = ", ".join(sorted(methods | {"OPTIONS"}))
    if method == "OPTIONS":
        return Response(status_code=204, headers={"Allow": allow})
    return error_response(405, "method_not_allowed", f"{method} is not allowed here; allowed: {allow}",
                          {"Allow": allow})


class OffLoopRequest(Request):
    """A request whose JSON body, when larger than ``OFF_LOOP_BYTES``, is parsed in a worker thread."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            body = await self.body()
            self._json = await run_in_threadpool(parse_json, body) if len(body) > OFF_LOOP_BYTES else parse_json(body)
        return self._json


def parse_json(body: bytes) -> Any:
    """A JSON body, or ``json.JSONDecodeError`` (FastAPI's documented 422 ``json_invalid``, ``ctx.error`` saying why)
    when it is not JSON, not UTF-8, nests deeper than Python can parse or holds a lone UTF-16 surrogate anywhere."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise json.JSONDecodeError("the body is not valid UTF-8; send UTF-8 JSON", "", exc.start) from None
    try:
        value = json.loads(text)
    except RecursionError:
        raise json.JSONDecodeError(f"nested too deeply (JSON values may nest at most {MAX_JSON_DEPTH} levels)",
                                   "", 0) from None
    if "\\u" in text and _has_lone_surrogate(value):
        raise json.JSONDecodeError("a string or key holds a lone UTF-16 surrogate (\\ud800-\\udfff); send valid "
                                   "Unicode", "", 0)
    return value


def _has_lone_surrogate(value: Any) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return True
    except (RecursionError, ValueError):
        return False  # too deep or NaN: the schemas say so
    return False


class OffLoopRoute(APIRoute):
    """The API's route class (``APIRouter(route_class=OffLoopRoute)``): handlers get an :class:`OffLoopRequest`."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def handle(request: Request) -> Response:
            return await handler(OffLoopRequest(request.scope, request.receive))

        return handle


__all__ = ["AuthFirstMiddleware", "OffLoopRoute", "api_routes"]
