"""``/projects``: create a project with its first policy; list and read projects."""

from __future__ import annotations

from fastapi import APIRouter

from policies import PermissionDeniedError
from service.api.deps import ANY_ROLE, OPERATOR, FeedbackDep, PrincipalDep, ProjectPath, StoreDep, allow
from service.api.errors import error_docs
from service.api.gate import OffLoopRoute
from service.api.ops import projects as ops
from service.api.schemas.projects import ProjectCreateRequest, ProjectDetail
from service.store.tables import ProjectPublic

router = APIRouter(prefix="/projects", tags=["projects"], route_class=OffLoopRoute)


@router.post("", dependencies=allow(*OPERATOR),
             status_code=201, response_model=ProjectPublic, summary="Create a project with its first policy",
             responses=error_docs(409, 422))
def create_project(body: ProjectCreateRequest, store: StoreDep, feedback: FeedbackDep, principal: PrincipalDep
                   ) -> ProjectPublic:
    if not principal.can_see(body.name):
        raise PermissionDeniedError(f"this key is scoped to other projects; it may not create project {body.name!r}")
    return ops.create_project(store=store, feedback=feedback, name=body.name, policy=body.policy,
                              actor=principal.name)


@router.get("", dependencies=allow(*ANY_ROLE),
            response_model=list[ProjectPublic], summary="List projects")
def list_projects(store: StoreDep, principal: PrincipalDep) -> list[ProjectPublic]:
    return [p for p in ops.list_projects(store=store) if principal.can_see(p.name)]


@router.get("/{project}", dependencies=allow(*ANY_ROLE),
            response_model=ProjectDetail, summary="Read a project", responses=error_docs(404))
def get_project(project: ProjectPath, store: StoreDep) -> ProjectDetail:
    return ops.get_project(store=store, project=project)
