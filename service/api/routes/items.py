"""``/projects/{project}/items``: ingest batches (JSON, or image files as multipart), list items by status, read an
item's state, evidence and thumbnail, correct its label, re-queue failed items."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, File, Form, Header, Path, Query, Response, UploadFile
from pydantic import AfterValidator
from starlette.concurrency import run_in_threadpool

from service.api.deps import INGEST, OPERATOR, REVIEWER, FeedbackDep, PrincipalDep, ProjectPath, StoreDep, allow
from service.api.errors import error_docs
from service.api.gate import OffLoopRoute
from service.api.ops import images as image_ops
from service.api.ops import items as ops
from service.api.ops import uploads
from service.api.schemas.common import no_nul
from service.api.schemas.items import (
    ClientStatus,
    CorrectionRequest,
    CorrectionResponse,
    IngestRequest,
    IngestResponse,
    ItemPage,
    ItemStatusOut,
    RequeueRequest,
    RequeueResponse,
)

router = APIRouter(prefix="/projects/{project}/items", tags=["items"], route_class=OffLoopRoute)

IdempotencyKeyHeader = Annotated[str | None, Header(alias="Idempotency-Key", min_length=1, max_length=128,
                                                    pattern=r"^[\x21-\x7e]+$",
                                                    description="Any printable ASCII key; a retry with the same key "
                                                                "and body returns the first answer.")]

ExternalIdPath = Annotated[str, Path(min_length=1, max_length=256, description="The client's external id."),
                          AfterValidator(no_nul)]


@router.post("", dependencies=allow(*INGEST),
             response_model=IngestResponse, summary="Ingest a batch of items (idempotent by external_id)",
             responses=error_docs(404, 409, 422))
async def ingest(project: ProjectPath, body: IngestRequest, store: StoreDep, feedback: FeedbackDep,
                 idempotency_key: IdempotencyKeyHeader = None) -> IngestResponse:
    """With an `Idempotency-Key`, a repeated call returns the first call's answer; the same key with a different
    body is a 409."""
    # images first, waiting on no request thread (slow URLs and busy decoders must not starve other routes)
    images = await ops.prepare_images(store=store, project=project, items=body.items)
    if idempotency_key is None:
        return await run_in_threadpool(lambda: ops.ingest_items(store=store, feedback=feedback, project=project,
                                                                items=body.items, images=images))
    return await run_in_threadpool(lambda: ops.ingest_once(store=store, feedback=feedback, project=project, body=body,
                                                           key=idempotency_key, images=images))


@router.get("", dependencies=allow(*INGEST),
            response_model=ItemPage, summary="List items by status, in arrival order",
            responses=error_docs(404))
def list_items(
    project: ProjectPath,
    store: StoreDep,
    status: Annotated[list[ClientStatus] | None, Query(description="Only items with one of these statuses "
                                                                   "(repeat the parameter); all when omitted.")] = None,
    after: Annotated[int, Query(ge=0, le=2**62, description="next_after of the previous page (0: from the first)")] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> ItemPage:
    """E.g. `?status=failed` for the items the agent failed on, with their errors (then `POST .../requeue`)."""
    return ops.list_items(store=store, project=project, statuses=status, after=after, limit=limit)


@router.post("/upload", dependencies=allow(*INGEST),
             response_model=IngestResponse, summary="Upload image files as items (multipart, idempotent)",
             responses=error_docs(404, 422))
def upload(project: ProjectPath, store: StoreDep, feedback: FeedbackDep,
           file: Annotated[list[UploadFile], File(description="One or more image files, one item each.")],
           external_id: Annotated[list[str], Form(description="One per file, in the same order.")],
           metadata: Annotated[list[str] | None, Form(description="Optional: one JSON object per file, in the same "
                                                                  "order (EXIF time and GPS fill time, lat, lon).")]
           = None) -> IngestResponse:
    """Each file becomes an item with that image. Every file is validated before anything is stored: one bad
    file refuses the whole upload (422 naming the file and why)."""
    files = [(f.filename or "", uploads.read_capped(f.file, store.settings.max_image_bytes)) for f in file]
    return uploads.upload_items(store=store, feedback=feedback, project=project, files=files,
                                external_ids=external_id, metadata=metadata)


@router.post("/requeue", dependencies=allow(*OPERATOR),
             response_model=RequeueResponse, summary="Send failed items back to the workers",
             responses=error_docs(404))
def requeue(project: ProjectPath, body: RequeueRequest, store: StoreDep, feedback: FeedbackDep, principal: PrincipalDep
            ) -> RequeueResponse:
    return ops.requeue_items(store=store, feedback=feedback, project=project, external_ids=body.external_ids,
                             actor=principal.name)


@router.post("/{external_id:path}/correction", dependencies=allow(*REVIEWER),
             response_model=CorrectionResponse, summary="Correct an item's label after the fact",
             responses=error_docs(404, 409, 422))
def correct(project: ProjectPath, external_id: ExternalIdPath, body: CorrectionRequest, store: StoreDep,
            feedback: FeedbackDep, principal: PrincipalDep) -> CorrectionResponse:
    """The item's label (an auto label or a human one) becomes `label`, a `human` label with a new label id: the
    export and the event stream deliver it again after any cursor (`replaces_label_id` names the record it
    supersedes), and the workers' learners train on it (it never joins the calibration set). The replaced label
    stays readable: `corrected_from` in the answer and the item's status, and a `label.corrected` audit entry.
    Correcting to the label the item has is a no-op (`changed: false`). 409 while the item has no label yet (answer
    its review task instead); 422 for a label outside the policy version that labeled it."""
    return ops.correct_item(store=store, feedback=feedback, project=project, external_id=external_id,
                            label=body.label, reviewer=body.reviewer, note=body.note, actor=principal.name)


@router.get("/{external_id:path}/thumbnail", dependencies=allow(*REVIEWER), response_class=Response,
            summary="A small JPEG or PNG of the item's image, for reviewers",
            responses={200: {"content": {t: {"schema": {"type": "string", "format": "binary"}}
                                         for t in ("image/jpeg", "image/png")},
                             "description": "At most 256 x 256 pixels, EXIF orientation applied."},
                       **error_docs(404, 422)})
def get_thumbnail(project: ProjectPath, external_id: ExternalIdPath, store: StoreDep) -> Response:
    """404 when the item does not exist or has no image. (An external id ending in `/thumbnail` is read here, so
    its status is out of reach of the route below.)"""
    data, media_type = image_ops.item_thumbnail(store=store, project=project, external_id=external_id)
    return Response(content=data, media_type=media_type, headers={"Cache-Control": "private, max-age=86400"})


@router.get("/{external_id:path}", dependencies=allow(*INGEST),
            response_model=ItemStatusOut, summary="Read an item's status, label and evidence",
            responses=error_docs(404))
def get_item(project: ProjectPath, external_id: ExternalIdPath, store: StoreDep) -> ItemStatusOut:
    return ops.item_status(store=store, project=project, external_id=external_id)
