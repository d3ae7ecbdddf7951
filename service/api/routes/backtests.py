"""Backtests of policy versions: ``POST /projects/{project}/policies/{version}/backtest`` runs and stores one,
``GET .../policies/{version}/backtests`` lists a version's (newest first), ``GET /projects/{project}/backtests/{id}``
reads one."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path, Query

from service.api.deps import OPERATOR, AuditDep, PrincipalDep, ProjectPath, StoreDep, ToolFactoryDep, allow
from service.api.errors import error_docs
from service.api.gate import OffLoopRoute
from service.api.ops import backtests as ops
from service.api.routes.policies import VersionPath
from service.api.schemas.policies import BacktestPage, BacktestRequest, BacktestResponse

router = APIRouter(prefix="/projects/{project}", tags=["policies"], route_class=OffLoopRoute)

BacktestPath = Annotated[int, Path(ge=1, le=2**31 - 1, description="Backtest id (`id` of a backtest).")]


@router.post("/policies/{version}/backtest", dependencies=allow(*OPERATOR),
             response_model=BacktestResponse,
             summary="Replay the ground truth through a version and the active one (stored)",
             responses=error_docs(404, 503))
def backtest(project: ProjectPath, version: VersionPath, store: StoreDep, tool_factory: ToolFactoryDep,
             principal: PrincipalDep, body: Annotated[BacktestRequest | None, Body()] = None) -> BacktestResponse:
    """Runs the real agent in-process on a private in-memory store (the live tables are not touched); blocking and
    CPU-bound, so it runs in the server's thread pool. Use `limit` to bound the time it takes. The figures are
    stored (the answer's `id` reads them again) and the audit log records the run."""
    params = body or BacktestRequest()
    return ops.run_backtest(store=store, project=project, version=version, tool_factory=tool_factory,
                            limit=params.limit, batch_size=params.batch_size, seed=params.seed, actor=principal.name)


@router.get("/policies/{version}/backtests", dependencies=allow(*OPERATOR),
            response_model=BacktestPage, summary="List a version's stored backtests, newest first",
            responses=error_docs(404))
def list_backtests(
    project: ProjectPath,
    version: VersionPath,
    audit: AuditDep,
    before: Annotated[int | None, Query(ge=1, le=2**62, description="Backtests older than this id (next_before "
                                                                    "of a page)")] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> BacktestPage:
    return ops.list_backtests(audit=audit, project=project, version=version, before=before, limit=limit)


@router.get("/backtests/{backtest}", dependencies=allow(*OPERATOR),
            response_model=BacktestResponse, summary="Read a stored backtest",
            responses=error_docs(404))
def get_backtest(project: ProjectPath, backtest: BacktestPath, audit: AuditDep) -> BacktestResponse:
    return ops.get_backtest(audit=audit, project=project, backtest_id=backtest)
