"""The review queue: ``/projects/{project}/reviews`` (claim, operators' list) and ``/reviews/{task}`` (heartbeat,
submit, skip, release under the claim's lease token)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query, Response

from agent.ports import ReviewKind
from service.api.deps import OPERATOR, REVIEWER, FeedbackDep, PrincipalDep, ProjectPath, StoreDep, TaskPath, allow
from service.api.errors import error_docs
from service.api.gate import OffLoopRoute
from service.api.ops import reviews as ops
from service.api.schemas.reviews import (
    ClaimedTask,
    ClaimRequest,
    HeartbeatResponse,
    LeaseRequest,
    QueuePage,
    ReleaseResponse,
    SkipRequest,
    SkipResponse,
    SubmitRequest,
    SubmitResponse,
)
from service.store.tables import TaskStatus

project_router = APIRouter(prefix="/projects/{project}/reviews", tags=["reviews"], route_class=OffLoopRoute)
router = APIRouter(prefix="/reviews", tags=["reviews"], route_class=OffLoopRoute)


@project_router.post("/claim", dependencies=allow(*REVIEWER),
                     response_model=ClaimedTask, summary="Claim the next review task",
                     responses={204: {"description": "Nothing to review for this reviewer right now."},
                                **error_docs(404)})
def claim(project: ProjectPath, body: ClaimRequest, store: StoreDep) -> ClaimedTask | Response:
    task = ops.claim_next(store=store, project=project, reviewer=body.reviewer)
    return Response(status_code=204) if task is None else task


@project_router.get("", dependencies=allow(*OPERATOR),
                    response_model=QueuePage, summary="List the review queue (operators)",
                    responses=error_docs(404))
def list_queue(
    project: ProjectPath,
    store: StoreDep,
    status: Annotated[TaskStatus | None, Query()] = None,
    kind: Annotated[ReviewKind | None, Query()] = None,
    offset: Annotated[int, Query(ge=0, le=10_000_000)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 50,
) -> QueuePage:
    return ops.list_queue(store=store, project=project, status=status, kind=kind, offset=offset, limit=limit)


@router.post("/{task}/heartbeat", dependencies=allow(*REVIEWER),
             response_model=HeartbeatResponse, summary="Extend the lease on a claimed task",
             responses=error_docs(404, 409))
def heartbeat(task: TaskPath, body: LeaseRequest, store: StoreDep, principal: PrincipalDep) -> HeartbeatResponse:
    return ops.heartbeat(store=store, task_id=task, token=body.lease_token, scope=principal.projects)


@router.post("/{task}/submit", dependencies=allow(*REVIEWER),
             response_model=SubmitResponse, summary="Answer a claimed task",
             responses=error_docs(404, 409, 422))
def submit(task: TaskPath, body: SubmitRequest, store: StoreDep, feedback: FeedbackDep,
           principal: PrincipalDep) -> SubmitResponse:
    return ops.submit(store=store, feedback=feedback, task_id=task, token=body.lease_token, label=body.label,
                      scope=principal.projects)


@router.post("/{task}/skip", dependencies=allow(*REVIEWER),
             response_model=SkipResponse, summary="Pass on a task (not offered to you again soon)",
             responses=error_docs(404, 409))
def skip(task: TaskPath, body: SkipRequest, store: StoreDep, principal: PrincipalDep) -> SkipResponse:
    return ops.skip(store=store, task_id=task, token=body.lease_token, seconds=body.seconds, scope=principal.projects)


@router.post("/{task}/release", dependencies=allow(*REVIEWER),
             response_model=ReleaseResponse, summary="Give a claimed task back to the queue",
             responses=error_docs(404, 409))
def release(task: TaskPath, body: LeaseRequest, store: StoreDep, principal: PrincipalDep) -> ReleaseResponse:
    return ops.release(store=store, task_id=task, token=body.lease_token, scope=principal.projects)
