"""``/projects/{project}/demo``: the status of ``labelagent demo``'s simulation, and pausing its reviewer (so a
person can take over the review queue)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Request

from service.api.deps import ANY_ROLE, REVIEWER, PrincipalDep, ProjectPath, StoreDep, allow
from service.api.errors import error_docs
from service.api.ops import demo as ops
from service.api.schemas.demo import DemoReviewerRequest, DemoStatus
from service.offline.demo.control import DemoControl

router = APIRouter(prefix="/projects/{project}/demo", tags=["demo"])


async def get_demo(request: Request) -> DemoControl | None:
    return request.app.state.demo


DemoDep = Annotated[DemoControl | None, Depends(get_demo)]


@router.get("", dependencies=allow(*ANY_ROLE), response_model=DemoStatus,
            summary="Is `labelagent demo` running on this project, and where is it", responses=error_docs(404))
def demo_status(project: ProjectPath, store: StoreDep, demo: DemoDep) -> DemoStatus:
    return ops.status(store=store, demo=demo, project=project)


@router.post("/reviewer", dependencies=allow(*REVIEWER), response_model=DemoStatus,
             summary="Pause or resume the demo's simulated reviewer", responses=error_docs(404, 409, 422))
def demo_reviewer(project: ProjectPath, body: DemoReviewerRequest, store: StoreDep, demo: DemoDep,
                  principal: PrincipalDep) -> DemoStatus:
    return ops.set_reviewer_paused(store=store, demo=demo, project=project, paused=body.paused, actor=principal.name)
