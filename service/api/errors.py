"""One exception handler: the project's exception tree (``policies.exceptions``) to HTTP statuses.

Body: ``{"error": {"type": ..., "message": ...}}`` with the exception's message, which says what to fix. Request
validation errors keep FastAPI's 422 with pydantic's ``detail``. Anything unexpected is logged and answered with a
generic 500 body: never a traceback.
"""

from __future__ import annotations

import logging
import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from pydantic.json_schema import models_json_schema
from starlette.exceptions import HTTPException as StarletteHTTPException

from policies import (
    AgentError,
    AuthenticationError,
    ConflictError,
    InputError,
    LabelAgentError,
    NotFoundError,
    PermissionDeniedError,
    PolicyError,
    RateLimitedError,
    ToolError,
)
from service.store.db import is_transient

log = logging.getLogger("labelagent.api")
DB_RETRY_AFTER_SECONDS = 2

# (exception class, HTTP status, error type): the first match wins, so subclasses come first
ERRORS: tuple[tuple[type[LabelAgentError], int, str], ...] = (
    (AuthenticationError, 401, "unauthorized"),
    (PermissionDeniedError, 403, "forbidden"),
    (RateLimitedError, 429, "rate_limited"),
    (NotFoundError, 404, "not_found"),
    (ConflictError, 409, "conflict"),
    (InputError, 422, "invalid_input"),
    (PolicyError, 422, "invalid_policy"),
    (ToolError, 503, "tool_unavailable"),
    (AgentError, 503, "agent_unavailable"),
)


class ErrorDetail(BaseModel):
    type: str
    message: str


class ErrorBody(BaseModel):
    """What every error of labelagent looks like on the wire."""

    error: ErrorDetail


def status_of(exc: LabelAgentError) -> tuple[int, str]:
    for cls, status, kind in ERRORS:
        if isinstance(exc, cls):
            return status, kind
    return 500, "internal"


def error_response(status: int, kind: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(status_code=status, content={"error": {"type": kind, "message": message}}, headers=headers)


def headers_of(exc: LabelAgentError) -> dict[str, str] | None:
    if isinstance(exc, AuthenticationError):
        return {"WWW-Authenticate": "Bearer"}
    if isinstance(exc, RateLimitedError):
        return {"Retry-After": str(exc.retry_after)}
    return None


async def labelagent_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, LabelAgentError)
    status, kind = status_of(exc)
    if status >= 500:
        log.error("%s %s failed: %s: %s", request.method, request.url.path, type(exc).__name__, exc)
    return error_response(status, kind, str(exc), headers_of(exc))


async def unexpected_error_handler(request: Request, exc: Exception) -> JSONResponse:
    if is_transient(exc):  # the database is restarting or unreachable: the client may simply retry
        log.warning("%s %s: database unavailable: %s", request.method, request.url.path, type(exc).__name__)
        return error_response(503, "database_unavailable", "the database is unavailable; retry shortly",
                              {"Retry-After": str(DB_RETRY_AFTER_SECONDS)})
    log.exception("%s %s failed unexpectedly", request.method, request.url.path, exc_info=exc)
    return error_response(500, "internal", "internal error; the server log has the details")


MAX_DETAIL_ERRORS = 20  # errors listed in one 422
MAX_INPUT_CHARS = 200  # of a rejected scalar input echoed back


def _scalar(value: Any) -> Any:
    """A rejected input as the 422 may echo it: scalars (NaN and infinities by name, long strings cut), never a
    container (walking a deeply nested one is how a 422 became a 500)."""
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)
    if isinstance(value, bool | int | float) or value is None:
        return value
    if isinstance(value, str):
        text = value[:MAX_INPUT_CHARS]
        return text.encode("utf-8", "replace").decode("utf-8") if not text.isascii() else text
    return f"<{type(value).__name__}>"


def _error(error: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = {"type": str(error.get("type", "")), "loc": [_scalar(p) for p in error.get("loc", ())][:64],
                           "msg": _scalar(str(error.get("msg", "")))}
    if "input" in error:
        out["input"] = _scalar(error["input"])
    ctx = error.get("ctx")
    if isinstance(ctx, dict):
        out["ctx"] = {str(k): _scalar(v if isinstance(v, bool | int | float | str) or v is None else str(v))
                      for k, v in ctx.items()}
    return out


async def validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """FastAPI's 422 with pydantic's ``detail``: at most ``MAX_DETAIL_ERRORS`` errors, each rejected input echoed
    only when it is a scalar (cut to ``MAX_INPUT_CHARS``; NaN by name), so rendering never recurses over the input."""
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    return JSONResponse(status_code=422, content={"detail": [_error(dict(e)) for e in errors[:MAX_DETAIL_ERRORS]]})


_HTTP_KINDS = {401: "unauthorized", 403: "forbidden", 404: "not_found", 405: "method_not_allowed", 409: "conflict",
               413: "too_large", 429: "rate_limited"}


async def http_error_handler(request: Request, exc: Exception) -> JSONResponse:
    """Errors the framework raises itself (no route matches the path: 404; a method the route lacks: 405) in the
    same body as every other error."""
    assert isinstance(exc, StarletteHTTPException)
    kind = _HTTP_KINDS.get(exc.status_code, "internal" if exc.status_code >= 500 else "http_error")
    return error_response(exc.status_code, kind, str(exc.detail), dict(exc.headers) if exc.headers else None)


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, validation_error_handler)
    app.add_exception_handler(StarletteHTTPException, http_error_handler)
    app.add_exception_handler(LabelAgentError, labelagent_error_handler)
    app.add_exception_handler(Exception, unexpected_error_handler)


_DOCS: dict[int, str] = {
    401: "No API key, or an unknown or revoked one (`Authorization: Bearer <key>` or `X-API-Key`).",
    403: "The API key's role may not call this route.",
    413: "The request body is larger than the server accepts.",
    429: "The API key's rate limit is exhausted; retry after `Retry-After` seconds.",
    404: "The project, item, review task or policy version does not exist.",
    409: "Conflicts with the current state (it exists already, the lease token is stale, ...).",
    422: "Invalid input: the request does not validate (FastAPI's `detail`) or cannot be processed "
         "(`error.message` says what to fix).",
    503: "The agent, one of its tools, or the database is unavailable (`Retry-After` when it is the database).",
}


def error_docs(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for the given error statuses (JSON whatever the route's media type; the schemas are
    added to the components by :func:`add_schemas`)."""
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses:
        schema: dict[str, Any] = {"$ref": f"{REF}ErrorBody"}
        if status == 422:
            schema = {"anyOf": [schema, {"$ref": f"{REF}HTTPValidationError"}]}
        out[status] = {"description": _DOCS[status], "content": {"application/json": {"schema": schema}}}
    return out


REF = "#/components/schemas/"


def add_auth_docs(openapi: dict[str, Any], public: tuple[str, ...] = ("/health",)) -> dict[str, Any]:
    """Document 401, 403 and 429 on every operation but ``public`` ones, and 413 on those with a body."""
    for path, operations in openapi.get("paths", {}).items():
        if path in public:
            continue
        for operation in operations.values():
            statuses = (401, 403, 429, 413) if "requestBody" in operation else (401, 403, 429)
            for status, doc in error_docs(*statuses).items():
                operation.setdefault("responses", {}).setdefault(str(status), doc)
    return openapi


def add_schemas(openapi: dict[str, Any], models: tuple[type[BaseModel], ...]) -> dict[str, Any]:
    """Add ``models`` (and what they use) to the OpenAPI document's components, for hand-written references."""
    _, top = models_json_schema([(m, "serialization") for m in models], ref_template=REF + "{model}")
    schemas = openapi.setdefault("components", {}).setdefault("schemas", {})
    for name, schema in top.get("$defs", {}).items():
        schemas.setdefault(name, schema)
    return openapi
