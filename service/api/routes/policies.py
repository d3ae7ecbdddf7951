"""``/projects/{project}/policies``: versions, create (validated), activate, roll back (backtests: ``backtests``)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path

from service.api.deps import OPERATOR, FeedbackDep, PrincipalDep, ProjectPath, StoreDep, allow
from service.api.errors import error_docs
from service.api.gate import OffLoopRoute
from service.api.ops import policies as ops
from service.api.schemas.policies import (
    ActivationResponse,
    PolicyChangeRequest,
    PolicyCreateRequest,
    PolicyVersionInfo,
)

router = APIRouter(prefix="/projects/{project}/policies", tags=["policies"], route_class=OffLoopRoute)

VersionPath = Annotated[int, Path(ge=1, le=2**31 - 1, description="Policy version number.")]
OptionalChange = Annotated[PolicyChangeRequest | None, Body()]


@router.get("", dependencies=allow(*OPERATOR),
            response_model=list[PolicyVersionInfo], summary="List policy versions",
            responses=error_docs(404))
def list_policies(project: ProjectPath, store: StoreDep) -> list[PolicyVersionInfo]:
    return ops.list_policies(store=store, project=project)


@router.post("", dependencies=allow(*OPERATOR),
             status_code=201, response_model=PolicyVersionInfo, summary="Create (and validate) a policy version",
             responses=error_docs(404, 409, 422))
def create_policy(project: ProjectPath, body: PolicyCreateRequest, store: StoreDep, feedback: FeedbackDep,
                  principal: PrincipalDep) -> PolicyVersionInfo:
    return ops.create_policy(store=store, feedback=feedback, project=project, policy=body.policy,
                             activate=body.activate, reason=body.reason, actor=principal.name)


@router.post("/rollback", dependencies=allow(*OPERATOR),
             response_model=ActivationResponse, summary="Re-activate the previously active version",
             responses=error_docs(404, 409))
def rollback(project: ProjectPath, store: StoreDep, feedback: FeedbackDep, principal: PrincipalDep,
             body: OptionalChange = None) -> ActivationResponse:
    return ops.rollback(store=store, feedback=feedback, project=project, reason=body.reason if body else "",
                        actor=principal.name)


@router.get("/{version}", dependencies=allow(*OPERATOR),
            response_model=PolicyVersionInfo, summary="Read a policy version",
            responses=error_docs(404))
def get_policy(project: ProjectPath, version: VersionPath, store: StoreDep) -> PolicyVersionInfo:
    return ops.get_policy(store=store, project=project, version=version)


@router.post("/{version}/activate", dependencies=allow(*OPERATOR),
             response_model=ActivationResponse, summary="Make a version the active one",
             responses=error_docs(404))
def activate(project: ProjectPath, version: VersionPath, store: StoreDep, feedback: FeedbackDep,
             principal: PrincipalDep, body: OptionalChange = None) -> ActivationResponse:
    return ops.activate(store=store, feedback=feedback, project=project, version=version,
                        reason=body.reason if body else "", actor=principal.name)
