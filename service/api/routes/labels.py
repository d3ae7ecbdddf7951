"""``/projects/{project}/labels`` (export, cursor-paginated) and ``/projects/{project}/events`` (server-sent events)."""

from __future__ import annotations

from collections.abc import AsyncIterable
from typing import Annotated, Any

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.sse import EventSourceResponse, ServerSentEvent

from service.api.deps import INGEST, ExistingProjectDep, PrincipalDep, ProjectPath, SettingsDep, StoreDep, allow
from service.api.errors import REF, error_docs
from service.api.gate import OffLoopRoute
from service.api.ops import labels as ops
from service.api.schemas.items import LabelRecord

router = APIRouter(prefix="/projects/{project}", tags=["labels"], route_class=OffLoopRoute)

_EXPORT_DOC: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "One label per line (JSONL), or a CSV with a header row, in label id order. The header "
                       "`X-Next-Cursor` continues after this page; `Link: <...>; rel=\"next\"` is set while more "
                       "labels exist.",
        "headers": {"X-Next-Cursor": {"schema": {"type": "string"}, "description": "Cursor after this page."},
                    "Link": {"schema": {"type": "string"}, "description": "The next page, while there is one."}},
        "content": {"application/x-ndjson": {"itemSchema": {"$ref": f"{REF}LabelRecord"}},
                    "text/csv": {"schema": {"type": "string"}}},
    }
}


class NDJSONResponse(Response):
    media_type = "application/x-ndjson"


@router.get("/labels", dependencies=allow(*INGEST),
            response_class=NDJSONResponse, responses={**_EXPORT_DOC, **error_docs(404, 422)},
            summary="Export labels (JSONL or CSV)")
def export_labels(
    project: ProjectPath,
    request: Request,
    store: StoreDep,
    format: Annotated[ops.ExportFormat, Query(description="jsonl or csv")] = "jsonl",
    cursor: Annotated[str | None, Query(max_length=64, description="X-Next-Cursor of the previous page")] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> Response:
    page = ops.export_labels(store=store, project=project, fmt=format, cursor=cursor, limit=limit)
    headers = {"X-Next-Cursor": page.next_cursor}
    if page.has_more:
        headers["Link"] = f'<{request.url.include_query_params(cursor=page.next_cursor)}>; rel="next"'
    return Response(content=page.body, media_type=page.media_type, headers=headers)


@router.get("/events", dependencies=allow(*INGEST),
            response_class=EventSourceResponse, summary="Stream labeled items (server-sent events)",
            responses=error_docs(404))
async def events(
    project: ExistingProjectDep,
    store: StoreDep,
    request: Request,
    principal: PrincipalDep,
    settings: SettingsDep,
    after: Annotated[int, Query(ge=0, le=2**62, description="Start after this label id (0: from the first)")] = 0,
    last_event_id: Annotated[int | None, Header(alias="Last-Event-ID", ge=0, le=2**62,
                                                description="Resume after this event id (wins over `after`)")] = None,
) -> AsyncIterable[LabelRecord]:
    """Every label written in the project, as `event: label` with the label id as event id, then new ones as they
    are written. The stream stays open until the client disconnects or its API key is revoked."""
    start = after if last_event_id is None else last_event_id
    poll = getattr(request.app.state, "events_poll_seconds", ops.POLL_SECONDS)
    event: ServerSentEvent
    async for event in ops.label_events(store=store, project=project, after_id=start, poll_seconds=poll,
                                        key_id=principal.key_id, recheck_seconds=settings.events_recheck_seconds):
        yield event  # type: ignore[misc]
