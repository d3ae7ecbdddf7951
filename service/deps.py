"""Dependencies of the routes, as ``Annotated`` aliases: settings, store, feedback sink, principal, tool factory.

The app factory puts the store and the feedback sink on ``app.state``; tests replace any of these with
``app.dependency_overrides[get_x] = ...``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Path, Request

from policies import AgentError, Policy
from service.feedback import FeedbackSink
from service.settings import Settings, get_settings
from service.store import SqlStore
from tools.base import Tool

ToolFactory = Callable[[Policy], Sequence[Tool]]

PROJECT_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"


def get_store(request: Request) -> SqlStore:
    return request.app.state.store


def get_feedback(request: Request) -> FeedbackSink:
    return request.app.state.feedback


@dataclass(frozen=True, slots=True)
class Principal:
    """Who calls. ``role`` None and ``projects`` None mean every role and every project (no keys yet)."""

    name: str
    role: str | None = None
    projects: frozenset[str] | None = None


ANONYMOUS = Principal("anonymous")


def get_principal() -> Principal:
    """Placeholder until API keys and roles exist: every caller is the anonymous principal."""
    return ANONYMOUS


def build_tools(policy: Policy) -> Sequence[Tool]:
    """``tools.registry.build_tools``, imported when first needed (AgentError, a 503, if it cannot be)."""
    try:
        from tools.registry import build_tools as build
    except ImportError as exc:
        raise AgentError(f"tools cannot be built: tools.registry is not available ({exc})") from None
    return build(policy)


def get_tool_factory() -> ToolFactory:
    """Builds a policy's tools, for backtests."""
    return build_tools


SettingsDep = Annotated[Settings, Depends(get_settings)]
StoreDep = Annotated[SqlStore, Depends(get_store)]
FeedbackDep = Annotated[FeedbackSink, Depends(get_feedback)]
PrincipalDep = Annotated[Principal, Depends(get_principal)]
ToolFactoryDep = Annotated[ToolFactory, Depends(get_tool_factory)]

ProjectPath = Annotated[str, Path(min_length=1, max_length=64, pattern=PROJECT_PATTERN,
                                  description="Project name (lowercase letters, digits, '_' and '-').")]
TaskPath = Annotated[int, Path(ge=1, le=2**31 - 1, description="Review task id, from a claim.")]


def check_project(project: ProjectPath, store: StoreDep) -> str:
    """The project from the path, after checking it exists (for routes that stream and cannot fail later)."""
    store.get_project(project)
    return project


ExistingProjectDep = Annotated[str, Depends(check_project)]
