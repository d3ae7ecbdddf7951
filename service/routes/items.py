"""``/projects/{project}/items``: ingest batches, read an item's state and evidence, re-queue failed items."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path
from pydantic import AfterValidator

from service.deps import INGEST, OPERATOR, FeedbackDep, PrincipalDep, ProjectPath, StoreDep, allow
from service.errors import error_docs
from service.ops import items as ops
from service.schemas.common import no_nul
from service.schemas.items import IngestRequest, IngestResponse, ItemStatusOut, RequeueRequest, RequeueResponse

router = APIRouter(prefix="/projects/{project}/items", tags=["items"])

ExternalIdPath = Annotated[str, Path(min_length=1, max_length=256, description="The client's external id."),
                          AfterValidator(no_nul)]


@router.post("", dependencies=allow(*INGEST),
             response_model=IngestResponse, summary="Ingest a batch of items (idempotent by external_id)",
             responses=error_docs(404, 422))
def ingest(project: ProjectPath, body: IngestRequest, store: StoreDep, feedback: FeedbackDep) -> IngestResponse:
    return ops.ingest_items(store=store, feedback=feedback, project=project, items=body.items)


@router.post("/requeue", dependencies=allow(*OPERATOR),
             response_model=RequeueResponse, summary="Send failed items back to the workers",
             responses=error_docs(404))
def requeue(project: ProjectPath, body: RequeueRequest, store: StoreDep, feedback: FeedbackDep, principal: PrincipalDep
            ) -> RequeueResponse:
    return ops.requeue_items(store=store, feedback=feedback, project=project, external_ids=body.external_ids,
                             actor=principal.name)


@router.get("/{external_id:path}", dependencies=allow(*INGEST),
            response_model=ItemStatusOut, summary="Read an item's status, label and evidence",
            responses=error_docs(404))
def get_item(project: ProjectPath, external_id: ExternalIdPath, store: StoreDep) -> ItemStatusOut:
    return ops.item_status(store=store, project=project, external_id=external_id)
