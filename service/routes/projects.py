"""``/projects``: create a project with its first policy; list and read projects."""

from __future__ import annotations

from fastapi import APIRouter

from service.deps import FeedbackDep, PrincipalDep, ProjectPath, StoreDep
from service.errors import error_docs
from service.models import ProjectPublic
from service.ops import projects as ops
from service.schemas.projects import ProjectCreateRequest, ProjectDetail

router = APIRouter(prefix="/projects", tags=["projects"])


@router.post("", status_code=201, response_model=ProjectPublic, summary="Create a project with its first policy",
             responses=error_docs(409, 422))
def create_project(body: ProjectCreateRequest, store: StoreDep, feedback: FeedbackDep, principal: PrincipalDep
                   ) -> ProjectPublic:
    return ops.create_project(store=store, feedback=feedback, name=body.name, policy=body.policy,
                              actor=principal.name)


@router.get("", response_model=list[ProjectPublic], summary="List projects")
def list_projects(store: StoreDep) -> list[ProjectPublic]:
    return ops.list_projects(store=store)


@router.get("/{project}", response_model=ProjectDetail, summary="Read a project", responses=error_docs(404))
def get_project(project: ProjectPath, store: StoreDep) -> ProjectDetail:
    return ops.get_project(store=store, project=project)
