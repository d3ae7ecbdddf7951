"""``/projects/{project}/audit``: every change made through the API, oldest first."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from service.api.deps import OPERATOR, AuditDep, ProjectPath, allow
from service.api.errors import error_docs
from service.api.gate import OffLoopRoute
from service.api.ops import policies as ops
from service.api.schemas.policies import AuditPage

router = APIRouter(prefix="/projects/{project}/audit", tags=["audit"], route_class=OffLoopRoute)


@router.get("", dependencies=allow(*OPERATOR),
            response_model=AuditPage, summary="Read the audit log",
            responses=error_docs(404))
def audit_log(
    project: ProjectPath,
    audit: AuditDep,
    after: Annotated[int, Query(ge=0, le=2**62, description="Events after this id (next_after of a page)")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> AuditPage:
    return ops.list_audit(audit=audit, project=project, after=after, limit=limit)
