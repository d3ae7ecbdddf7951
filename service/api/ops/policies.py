"""Policy versions (list, create, activate, roll back) with each one's latest backtest, and the audit log."""

from __future__ import annotations

from typing import Any

from policies import Policy
from service.api.ops import tell
from service.api.ops.backtests import latest_backtests
from service.api.ops.projects import policy_from_input
from service.api.schemas.policies import ActivationResponse, AuditPage, BacktestResponse, PolicyVersionInfo
from service.runtime.feedback import FeedbackSink
from service.store import SqlStore
from service.store.repositories import AuditRepository
from service.store.tables import PolicyVersionPublic


def _info(row: PolicyVersionPublic, policy: Policy, active: int | None, latest: dict[int, BacktestResponse]
          ) -> PolicyVersionInfo:
    return PolicyVersionInfo(**row.model_dump(), active=row.version == active, policy=policy.model_dump(mode="json"),
                             latest_backtest=latest.get(row.version))


def list_policies(*, store: SqlStore, project: str) -> list[PolicyVersionInfo]:
    active = store.projects.get_project(project).active_version
    latest = latest_backtests(store=store, project=project)
    return [_info(row, store.projects.get_policy(project, row.version), active, latest)
            for row in store.projects.list_policy_versions(project)]


def get_policy(*, store: SqlStore, project: str, version: int) -> PolicyVersionInfo:
    policy = store.projects.get_policy(project, version)  # NotFoundError for an unknown version
    active = store.projects.get_project(project).active_version
    row = next(r for r in store.projects.list_policy_versions(project) if r.version == version)
    return _info(row, policy, active, latest_backtests(store=store, project=project))


def create_policy(*, store: SqlStore, feedback: FeedbackSink, project: str, policy: dict[str, Any] | str,
                  activate: bool, reason: str, actor: str) -> PolicyVersionInfo:
    store.projects.get_project(project)  # 404 before 422: an unknown project is the first thing to fix
    candidate, requested = policy_from_input(policy, project=project, settings=store.settings)
    stored = store.audit.create_policy_version(project, candidate, actor=actor, requested=requested, activate=activate,
                                         reason=reason)
    if activate:
        tell(feedback, project)
    return get_policy(store=store, project=project, version=stored.version)


def activate(*, store: SqlStore, feedback: FeedbackSink, project: str, version: int, reason: str, actor: str
             ) -> ActivationResponse:
    previous, active = store.audit.activate_policy_logged(project, version, actor=actor, reason=reason)
    tell(feedback, project)
    return ActivationResponse(project=project, active_version=active, previous_version=previous)


def rollback(*, store: SqlStore, feedback: FeedbackSink, project: str, reason: str, actor: str
             ) -> ActivationResponse:
    previous, active = store.audit.rollback_policy(project, actor=actor, reason=reason)
    tell(feedback, project)
    return ActivationResponse(project=project, active_version=active, previous_version=previous)


def list_audit(*, audit: AuditRepository, project: str, after: int, limit: int) -> AuditPage:
    events = audit.list_audit(project, after_id=after, limit=limit + 1)
    more = len(events) > limit
    events = events[:limit]
    return AuditPage(events=events, next_after=events[-1].id if more else None)

