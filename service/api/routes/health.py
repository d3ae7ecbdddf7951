"""``/health``: the process answers and the database too."""

from __future__ import annotations

import anyio
from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse

from service.api.deps import StoreDep
from service.api.gate import OffLoopRoute
from service.api.ops import metrics as ops
from service.api.schemas.metrics import Health

router = APIRouter(prefix="/health", tags=["health"], route_class=OffLoopRoute)


@router.get("", response_model=Health, summary="Health check (with a database round trip)",
            responses={503: {"model": Health, "description": "The database does not answer."}})
async def health(store: StoreDep, request: Request) -> Health | JSONResponse:
    # its own two threads: /health answers while the request thread pool is busy (e.g. with image ingests)
    limiter = getattr(request.app.state, "health_limiter", None)
    if limiter is None:
        limiter = request.app.state.health_limiter = anyio.CapacityLimiter(2)
    result = await anyio.to_thread.run_sync(lambda: ops.health(store=store), limiter=limiter)
    return result if result.status == "ok" else JSONResponse(status_code=503, content=result.model_dump())
