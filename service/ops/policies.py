"""Policy versions (list, create, activate, roll back, backtest) and the audit log."""

from __future__ import annotations

from typing import Any

from policies import Policy
from service.backtest import ToolFactory, backtest
from service.feedback import FeedbackSink
from service.models import PolicyVersionPublic
from service.ops import tell
from service.ops.projects import policy_from_input
from service.schemas.policies import (
    ActivationResponse,
    AuditPage,
    BacktestFigures,
    BacktestResponse,
    PolicyVersionInfo,
)
from service.store import SqlStore


def _info(row: PolicyVersionPublic, policy: Policy, active: int | None) -> PolicyVersionInfo:
    return PolicyVersionInfo(**row.model_dump(), active=row.version == active, policy=policy.model_dump(mode="json"))


def list_policies(*, store: SqlStore, project: str) -> list[PolicyVersionInfo]:
    active = store.get_project(project).active_version
    return [_info(row, store.get_policy(project, row.version), active) for row in store.list_policy_versions(project)]


def get_policy(*, store: SqlStore, project: str, version: int) -> PolicyVersionInfo:
    policy = store.get_policy(project, version)  # NotFoundError for an unknown version
    active = store.get_project(project).active_version
    row = next(r for r in store.list_policy_versions(project) if r.version == version)
    return _info(row, policy, active)


def create_policy(*, store: SqlStore, feedback: FeedbackSink, project: str, policy: dict[str, Any] | str,
                  activate: bool, reason: str, actor: str) -> PolicyVersionInfo:
    store.get_project(project)  # 404 before 422: an unknown project is the first thing to fix
    candidate, requested = policy_from_input(policy, project=project)
    stored = store.create_policy_version(project, candidate, actor=actor, requested=requested, activate=activate,
                                         reason=reason)
    if activate:
        tell(feedback, project)
    return get_policy(store=store, project=project, version=stored.version)


def activate(*, store: SqlStore, feedback: FeedbackSink, project: str, version: int, reason: str, actor: str
             ) -> ActivationResponse:
    previous, active = store.activate_policy_logged(project, version, actor=actor, reason=reason)
    tell(feedback, project)
    return ActivationResponse(project=project, active_version=active, previous_version=previous)


def rollback(*, store: SqlStore, feedback: FeedbackSink, project: str, reason: str, actor: str
             ) -> ActivationResponse:
    previous, active = store.rollback_policy(project, actor=actor, reason=reason)
    tell(feedback, project)
    return ActivationResponse(project=project, active_version=active, previous_version=previous)


def _figures(version: int, summary: dict[str, Any]) -> BacktestFigures:
    items = summary["items"]
    lo, hi = summary["auto_precision_ci"]
    return BacktestFigures(
        policy_version=version, items=items, auto_labeled=summary["auto_labeled"],
        auto_rate=round(summary["auto_labeled"] / items, 4) if items else None,
        auto_precision=summary["auto_precision"], auto_precision_ci=(lo, hi), human_reviews=summary["human_reviews"],
        audits=summary["audits"], threshold=summary["threshold"], seconds=summary["seconds"],
    )


def run_backtest(*, store: SqlStore, project: str, version: int, tool_factory: ToolFactory, limit: int,
                 batch_size: int, seed: int) -> BacktestResponse:
    """Replay the project's ground truth through the candidate and the active version (blocking: CPU-bound)."""
    candidate = store.get_policy(project, version)
    active_version = store.get_project(project).active_version
    active = store.get_policy(project, active_version) if active_version is not None else candidate
    truth = store.ground_truth_in_order(project, limit=limit)
    results: dict[int, BacktestFigures] = {}
    for policy in (candidate, active):
        if policy.version not in results:
            summary = backtest(policy, truth, tool_factory, batch_size=batch_size, seed=seed)
            results[policy.version] = _figures(policy.version, summary)
    return BacktestResponse(project=project, ground_truth=len(truth), candidate=results[candidate.version],
                            active=results[active.version])


def list_audit(*, store: SqlStore, project: str, after: int, limit: int) -> AuditPage:
    events = store.list_audit(project, after_id=after, limit=limit + 1)
    more = len(events) > limit
    events = events[:limit]
    return AuditPage(events=events, next_after=events[-1].id if more else None)

