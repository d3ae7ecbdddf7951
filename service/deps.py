"""Dependencies of the routes, as ``Annotated`` aliases: settings, store, feedback sink, principal (the caller's API
key), tool factory; and :func:`allow`, which says which roles may call a route.

The app factory puts the store and the feedback sink on ``app.state``; tests replace any of these with
``app.dependency_overrides[get_x] = ...``.
"""

from __future__ import annotations

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
from service.feedback import FeedbackSink
from service.settings import Settings, get_settings, tool_environment
from service.store import SqlStore
from tools.base import Tool
from tools.environment import ToolEnvironment

ToolFactory = Callable[[Policy], Sequence[Tool]]

PROJECT_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"


# The getters below are ``async`` only so that FastAPI calls them on the event loop: a plain ``def`` dependency is
# sent to the thread pool, a thread hop per request for reading an attribute.


async def get_store(request: Request) -> SqlStore:
    return request.app.state.store


async def get_feedback(request: Request) -> FeedbackSink:
    return request.app.state.feedback


async def app_settings(request: Request) -> Settings:
    """The app's settings (``create_app`` puts them on ``app.state``), else the environment's."""
    settings = getattr(request.app.state, "settings", None)
    return settings if isinstance(settings, Settings) else get_settings()


SettingsDep = Annotated[Settings, Depends(app_settings)]
StoreDep = Annotated[SqlStore, Depends(get_store)]
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


def get_principal(request: Request, store: StoreDep,
                  bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)] = None,
                  header: Annotated[str | None, Security(_api_key)] = None) -> Principal:
    """The caller's API key (401 without a live one), charged one request of its rate limit (429 past it)."""
    key = header or (bearer.credentials if bearer is not None else None)
    if not key:
        raise AuthenticationError("an API key is required: send 'Authorization: Bearer <key>' or 'X-API-Key: <key>'")
    if header and bearer is not None and bearer.credentials != header:
        raise AuthenticationError("'Authorization' and 'X-API-Key' carry different keys; send one key")
    record = store.authenticate(key)
    if record is None:
        raise AuthenticationError("the API key is unknown or revoked")
    limiter = getattr(request.app.state, "rate_limiter", None)
    wait = limiter.acquire(record.id) if limiter is not None else 0
    if wait:
        raise RateLimitedError(f"rate limit of this API key exceeded; retry after {wait} s", retry_after=wait)
    projects = frozenset(record.projects) if record.projects is not None else None
    return Principal(name=f"{record.prefix}:{record.name}"[:128], role=record.role, projects=projects,
                     key_id=record.id)


PrincipalDep = Annotated[Principal, Depends(get_principal)]
MAX_TASK_ID = 2**31 - 1


class Allow:
    """Route dependency: the caller's role must be one of ``roles``; a ``{project}`` (or a ``{task}``'s project)
    the key may not see answers 404, exactly like one that does not exist, before anything is read or written."""

    def __init__(self, *roles: str) -> None:
        self.roles = frozenset(roles)

    async def __call__(self, request: Request, principal: PrincipalDep, store: StoreDep) -> Principal:
        # async, so that it runs on the event loop: the task's project is remembered from its claim (the thread
        # pool is used only to look up a task this process never saw), one thread hop fewer per review request
        if principal.role not in self.roles:
            route = getattr(request.scope.get("route"), "path", request.url.path)
            raise PermissionDeniedError(f"a key of role {principal.role!r} may not call {request.method} {route}; "
                                        f"it needs role {' or '.join(repr(r) for r in sorted(self.roles))}")
        project = request.path_params.get("project")
        if isinstance(project, str) and not principal.can_see(project):
            raise NotFoundError(f"project {project!r} does not exist")
        task = request.path_params.get("task")
        if isinstance(task, str) and task.isascii() and task.isdigit() and 1 <= int(task) <= MAX_TASK_ID:
            ref = store.known_task_key(int(task)) or await run_in_threadpool(store.task_key, int(task))
            if ref is None or not principal.can_see(ref.project):
                raise NotFoundError(f"review task {int(task)} does not exist")
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
TaskPath = Annotated[int, Path(ge=1, le=2**31 - 1, description="Review task id, from a claim.")]


def check_project(project: ProjectPath, store: StoreDep) -> str:
    """The project from the path, after checking it exists (for routes that stream and cannot fail later)."""
    store.get_project(project)
    return project


ExistingProjectDep = Annotated[str, Depends(check_project)]
