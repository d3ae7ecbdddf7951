"""Dependencies of the routes, as ``Annotated`` aliases: settings, store, feedback sink, principal (the caller's API
key), tool factory; and :func:`allow`, which says which roles may call a route.

The app factory puts the store and the feedback sink on ``app.state``; tests replace any of these with
``app.dependency_overrides[get_x] = ...``.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Annotated, Any

from fastapi import Depends, Path, Request, Security
from fastapi.concurrency import run_in_threadpool
from fastapi.security import APIKeyHeader, HTTPAuthorizationCredentials, HTTPBearer

from policies import (
    AgentError,
    AuthenticationError,
    NotFoundError,
    PermissionDeniedError,
    Policy,
    RateLimitedError,
)
from service.runtime.feedback import FeedbackSink
from service.settings import Settings, get_settings, tool_environment
from service.store import SqlStore
from service.store.repositories import AuditRepository
from tools.base import Tool
from tools.environment import ToolEnvironment

ToolFactory = Callable[[Policy], Sequence[Tool]]

PROJECT_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"


# The getters below are ``async`` only so that FastAPI calls them on the event loop: a plain ``def`` dependency is
# sent to the thread pool, a thread hop per request for reading an attribute.


async def get_store(request: Request) -> SqlStore:
    return request.app.state.store


async def get_audit(store: Annotated[SqlStore, Depends(get_store)]) -> AuditRepository:
    """The store's audit repository, for routes that need nothing else (one dependency per repository)."""
    return store.audit


async def get_feedback(request: Request) -> FeedbackSink:
    return request.app.state.feedback


async def app_settings(request: Request) -> Settings:
    """The app's settings (``create_app`` puts them on ``app.state``), else the environment's."""
    settings = getattr(request.app.state, "settings", None)
    return settings if isinstance(settings, Settings) else get_settings()


SettingsDep = Annotated[Settings, Depends(app_settings)]
StoreDep = Annotated[SqlStore, Depends(get_store)]
AuditDep = Annotated[AuditRepository, Depends(get_audit)]
FeedbackDep = Annotated[FeedbackSink, Depends(get_feedback)]


@dataclass(frozen=True, slots=True)
class Principal:
    """Who calls: an API key's role and projects (``projects`` None means every project)."""

    name: str
    role: str
    projects: frozenset[str] | None = None
    key_id: int | None = None

    def can_see(self, project: str) -> bool:
        return self.projects is None or project in self.projects


_bearer = HTTPBearer(auto_error=False, description="`Authorization: Bearer <key>`")
_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="`X-API-Key: <key>` (either header works)")


def principal_from_key(request: Request, key: str | None, bearer_key: str | None, header: str | None) -> Principal:
    """The principal of ``key`` (401 without a live one), charged one request of its rate limit (429 past it).
    Unknown keys are rate limited too (by the client's address), so guessing keys costs the guesser."""
    if not key:
        raise AuthenticationError("an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'")
    if header and bearer_key is not None and bearer_key != header:
        raise AuthenticationError("'Authorization' and 'X-API-Key' carry different keys; send one key")
    store: SqlStore = request.app.state.store
    limiter = getattr(request.app.state, "rate_limiter", None)
    record = store.projects.authenticate(key)
    if record is None:
        client = request.client.host if request.client else "unknown"
        wait = limiter.acquire(("unknown-key", client)) if limiter is not None else 0
        if wait:
            raise RateLimitedError(f"too many requests with unknown keys; retry after {wait} s", retry_after=wait)
        raise AuthenticationError("the API key is unknown or revoked")
    wait = limiter.acquire(record.id) if limiter is not None else 0
    if wait:
        raise RateLimitedError(f"rate limit of this API key exceeded; retry after {wait} s", retry_after=wait)
    projects = frozenset(record.projects) if record.projects is not None else None
    return Principal(name=f"{record.prefix}:{record.name}"[:128], role=record.role, projects=projects,
                     key_id=record.id)


def _keys_of(request: Request, schemes: frozenset[str]) -> tuple[str | None, str | None, str | None]:
    """(the key, the ``Authorization`` credential, the X-API-Key header) of a request's headers; ``schemes``: the
    ``Authorization`` schemes the route accepts (``bearer``; Label Studio's routes also ``basic`` and ``token``)."""
    header = request.headers.get("x-api-key") or None
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    scheme, credentials = scheme.lower(), credentials.strip()
    key: str | None = None
    if scheme in schemes and scheme == "basic":
        try:
            user, sep, password = base64.b64decode(credentials, validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError, binascii.Error):
            raise AuthenticationError("the Basic credentials are not base64 of 'user:password'") from None
        if not sep:
            raise AuthenticationError("the Basic credentials are not base64 of 'user:password'")
        key = password or user
    elif scheme in schemes and credentials:
        key = credentials
    return header or key, key, header


async def authenticate_headers(request: Request, schemes: frozenset[str]) -> Principal:
    """:func:`principal_from_key` for the request's headers, the database read in a worker thread."""
    key, credential, header = _keys_of(request, schemes)
    return await run_in_threadpool(principal_from_key, request, key, credential, header)


def get_principal(request: Request, store: StoreDep,
                  bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)] = None,
                  header: Annotated[str | None, Security(_api_key)] = None) -> Principal:
    """The caller's API key: the one :class:`service.api.gate.AuthFirstMiddleware` authenticated before the body was
    read, else authenticated now (401 without a live one; 429 past its rate limit)."""
    found = getattr(request.state, "principal", None)
    if isinstance(found, Principal):
        return found
    bearer_key = bearer.credentials if bearer is not None else None
    return principal_from_key(request, header or bearer_key, bearer_key, header)


def check_role(principal: Principal, roles: frozenset[str], what: str) -> None:
    """PermissionDeniedError (403) when the principal's role is not one of ``roles``."""
    if principal.role not in roles:
        raise PermissionDeniedError(f"a key of role {principal.role!r} may not call {what}; "
                                    f"it needs role {' or '.join(repr(r) for r in sorted(roles))}")


PrincipalDep = Annotated[Principal, Depends(get_principal)]
MAX_TASK_ID = 2**31 - 1
TASK_PATTERN = r"^[1-9][0-9]{0,9}$"  # the one spelling of a task id: no sign, zeros, '_', spaces, '.0' or non-ASCII


def parse_task_id(raw: object) -> int | None:
    """The task id a path segment spells canonically (``TASK_PATTERN``, 1..2**31-1), else None."""
    if not isinstance(raw, str) or not raw.isascii() or not re.fullmatch(TASK_PATTERN, raw):
        return None
    value = int(raw)
    return value if value <= MAX_TASK_ID else None


class Allow:
    """Route dependency: the caller's role must be one of ``roles``; a ``{project}`` (or a ``{task}``'s project)
    the key may not see answers 404, exactly like one that does not exist, before anything is read or written."""

    schemes = frozenset({"bearer"})  # the Authorization schemes that carry a key (besides X-API-Key)

    def __init__(self, *roles: str) -> None:
        self.roles = frozenset(roles)

    async def __call__(self, request: Request, principal: PrincipalDep, store: StoreDep) -> Principal:
        # async, so that it runs on the event loop: the task's project is remembered from its claim (the thread
        # pool is used only to look up a task this process never saw), one thread hop fewer per review request
        route = getattr(request.scope.get("route"), "path", request.url.path)
        check_role(principal, self.roles, f"{request.method} {route}")
        project = request.path_params.get("project")
        if isinstance(project, str) and not principal.can_see(project):
            raise NotFoundError(f"project {project!r} does not exist")
        task = parse_task_id(request.path_params.get("task"))
        if task is not None:  # a non-canonical id is refused (422) by the route's own TaskPath, never looked up
            ref = store.reviews.known_task_key(task) or await run_in_threadpool(store.reviews.task_key, task)
            if ref is None or not principal.can_see(ref.project):
                raise NotFoundError(f"review task {task} does not exist")
        return principal


def allow(*roles: str) -> list[Any]:
    """``dependencies=allow("operator", ...)`` for a route: who may call it."""
    return [Depends(Allow(*roles))]


OPERATOR = ("operator",)
INGEST = ("ingest", "operator")
REVIEWER = ("reviewer", "operator")
ANY_ROLE = ("ingest", "reviewer", "operator")


def build_tools(policy: Policy, env: ToolEnvironment | None = None) -> Sequence[Tool]:
    """``tools.registry.build_tools``, imported when first needed (AgentError, a 503, if it cannot be)."""
    try:
        from tools.registry import build_tools as build
    except ImportError as exc:
        raise AgentError(f"tools cannot be built: tools.registry is not available ({exc})") from None
    return build(policy, env=env)


def get_tool_factory(settings: SettingsDep) -> ToolFactory:
    """Builds a policy's tools with the deployment's endpoints and limits, for backtests and predictions."""
    return partial(build_tools, env=tool_environment(settings))


ToolFactoryDep = Annotated[ToolFactory, Depends(get_tool_factory)]

ProjectPath = Annotated[str, Path(min_length=1, max_length=64, pattern=PROJECT_PATTERN,
                                  description="Project name (lowercase letters, digits, '_' and '-').")]


def task_path(task: Annotated[str, Path(pattern=TASK_PATTERN, max_length=10,
                                        description="Review task id, from a claim (digits only).")]) -> int:
    """The task id of the path, parsed once by :func:`parse_task_id` (the spelling :class:`Allow` checked)."""
    value = parse_task_id(task)
    if value is None:
        raise NotFoundError(f"review task {task} does not exist")
    return value


TaskPath = Annotated[int, Depends(task_path)]


def check_project(project: ProjectPath, store: StoreDep) -> str:
    """The project from the path, after checking it exists (for routes that stream and cannot fail later)."""
    store.projects.get_project(project)
    return project


ExistingProjectDep = Annotated[str, Depends(check_project)]
