"""Backtests: run one (the candidate and the active version on the project's ground truth) and store it with its
audit entry; read the stored ones back (a version's, newest first; one by id; each version's latest)."""

from __future__ import annotations

from typing import Any

from service.api.schemas.policies import BacktestFigures, BacktestPage, BacktestRequest, BacktestResponse
from service.offline.backtest import ToolFactory, backtest
from service.store import SqlStore
from service.store.ops_models import BacktestPublic
from service.store.repositories import AuditRepository


def figures(version: int, summary: dict[str, Any]) -> BacktestFigures:
    """The API's figures from a replay summary (``service.offline.replay.summarize``, as stored)."""
    items = summary["items"]
    lo, hi = summary["auto_precision_ci"]
    return BacktestFigures(
        policy_version=version, items=items, auto_labeled=summary["auto_labeled"],
        auto_rate=round(summary["auto_labeled"] / items, 4) if items else None,
        auto_precision=summary["auto_precision"], auto_precision_ci=(lo, hi), human_reviews=summary["human_reviews"],
        audits=summary["audits"], threshold=summary["threshold"], seconds=summary["seconds"],
        overall_accuracy=summary.get("overall_accuracy"), agent_accuracy=summary.get("agent_accuracy"),
        target_precision=summary.get("target_precision"),
    )


def response(project: str, row: BacktestPublic) -> BacktestResponse:
    return BacktestResponse(
        id=row.id, created_at=row.created_at, requested_by=row.requested_by, project=project,
        request=BacktestRequest(limit=row.limit, batch_size=row.batch_size, seed=row.seed),
        ground_truth=row.ground_truth, candidate=figures(row.policy_version, row.candidate),
        active=figures(row.active_version, row.active),
    )


def run_backtest(*, store: SqlStore, project: str, version: int, tool_factory: ToolFactory, limit: int,
                 batch_size: int, seed: int, actor: str) -> BacktestResponse:
    """Replay the project's ground truth through the candidate and the active version (blocking: CPU-bound), then
    store the figures with a ``policy.backtested`` audit entry."""
    candidate = store.projects.get_policy(project, version)
    active_version = store.projects.get_project(project).active_version
    active = store.projects.get_policy(project, active_version) if active_version is not None else candidate
    truth = store.items.ground_truth_in_order(project, limit=limit)
    summaries: dict[int, dict[str, Any]] = {}
    for policy in (candidate, active):
        if policy.version not in summaries:
            summaries[policy.version] = backtest(policy, truth, tool_factory, batch_size=batch_size, seed=seed)
    row = store.audit.record_backtest(project, policy_version=candidate.version, active_version=active.version,
                                      actor=actor,
                                limit=limit, batch_size=batch_size, seed=seed, ground_truth=len(truth),
                                candidate=summaries[candidate.version], active=summaries[active.version])
    return response(project, row)


def list_backtests(*, audit: AuditRepository, project: str, version: int, before: int | None, limit: int
                   ) -> BacktestPage:
    rows = audit.list_backtests(project, version, before_id=before, limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return BacktestPage(backtests=[response(project, r) for r in rows], next_before=rows[-1].id if more else None)


def get_backtest(*, audit: AuditRepository, project: str, backtest_id: int) -> BacktestResponse:
    return response(project, audit.get_backtest(project, backtest_id))


def latest_backtests(*, store: SqlStore, project: str) -> dict[int, BacktestResponse]:
    """Each policy version's newest backtest, by version (versions never backtested are missing)."""
    return {version: response(project, row) for version, row in store.audit.latest_backtests(project).items()}
