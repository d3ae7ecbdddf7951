"""Metrics: ``/projects/{project}/metrics`` (JSON) and ``/metrics`` (Prometheus text, every project)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Response

from service.api.deps import OPERATOR, PrincipalDep, ProjectPath, StoreDep, allow
from service.api.errors import error_docs
from service.api.gate import OffLoopRoute
from service.api.ops import insights
from service.api.ops import metrics as ops
from service.api.schemas.metrics import CalibrationCurve, PrecisionHistory, ProjectMetrics, ToolReport

router = APIRouter(tags=["metrics"], route_class=OffLoopRoute)

_PROMETHEUS_DOC: dict[int | str, dict[str, Any]] = {
    200: {"description": "Prometheus text exposition format 0.0.4 (gauges `labelagent_*`).",
          "content": {"text/plain": {"schema": {"type": "string"}}}}}


@router.get("/projects/{project}/metrics", dependencies=allow(*OPERATOR),
            response_model=ProjectMetrics, summary="A project's metrics",
            responses=error_docs(404))
def project_metrics(project: ProjectPath, store: StoreDep) -> ProjectMetrics:
    return ops.project_metrics(store=store, project=project)


@router.get("/projects/{project}/metrics/calibration", dependencies=allow(*OPERATOR),
            response_model=CalibrationCurve, summary="Precision versus coverage on the calibration sample",
            responses=error_docs(404))
def calibration_curve(project: ProjectPath, store: StoreDep) -> CalibrationCurve:
    return insights.calibration_curve(store=store, project=project)


@router.get("/projects/{project}/metrics/precision", dependencies=allow(*OPERATOR),
            response_model=PrecisionHistory, summary="Realized auto-label precision from audits, over time",
            responses=error_docs(404))
def precision_history(project: ProjectPath, store: StoreDep) -> PrecisionHistory:
    return insights.precision_history(store=store, project=project)


@router.get("/projects/{project}/metrics/tools", dependencies=allow(*OPERATOR),
            response_model=ToolReport, summary="Each tool's calls, cost, accuracy and pooled weight",
            responses=error_docs(404))
def tool_report(project: ProjectPath, store: StoreDep) -> ToolReport:
    return insights.tool_report(store=store, project=project)


@router.get("/metrics", dependencies=allow(*OPERATOR),
            response_class=Response, responses=_PROMETHEUS_DOC, summary="Prometheus metrics")
def prometheus(store: StoreDep, principal: PrincipalDep) -> Response:
    return Response(content=ops.prometheus_text(store=store, projects=principal.projects),
                    media_type=ops.PROMETHEUS_CONTENT_TYPE)
