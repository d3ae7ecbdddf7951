"""``/projects/{project}/items``: ingest batches, read an item's state and evidence, re-queue failed items."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Header, Path
from pydantic import AfterValidator

from service.deps import INGEST, OPERATOR, FeedbackDep, PrincipalDep, ProjectPath, StoreDep, allow
from service.errors import error_docs
from service.ops import items as ops
from service.schemas.common import no_nul
from service.schemas.items import IngestRequest, IngestResponse, ItemStatusOut, RequeueRequest, RequeueResponse

router = APIRouter(prefix="/projects/{project}/items", tags=["items"])

IdempotencyKeyHeader = Annotated[str | None, Header(alias="Idempotency-Key", min_length=1, max_length=128,
                                                    pattern=r"^[\x21-\x7e]+$",
                                                    description="Any printable ASCII key; a retry with the same key "
                                                                "and body returns the first answer.")]

ExternalIdPath = Annotated[str, Path(min_length=1, max_length=256, description="The client's external id."),
                          AfterValidator(no_nul)]


@router.post("", dependencies=allow(*INGEST),
             response_model=IngestResponse, summary="Ingest a batch of items (idempotent by external_id)",
             responses=error_docs(404, 409, 422))
def ingest(project: ProjectPath, body: IngestRequest, store: StoreDep, feedback: FeedbackDep,
           idempotency_key: IdempotencyKeyHeader = None) -> IngestResponse:
    """With an `Idempotency-Key`, a repeated call returns the first call's answer; the same key with a different
    body is a 409."""
    if idempotency_key is None:
        return ops.ingest_items(store=store, feedback=feedback, project=project, items=body.items)
    return ops.ingest_once(store=store, feedback=feedback, project=project, body=body, key=idempotency_key)


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
