"""``/health``: the process answers and the database too."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from service.deps import StoreDep
from service.gate import OffLoopRoute
from service.ops import metrics as ops
from service.schemas.metrics import Health

router = APIRouter(prefix="/health", tags=["health"], route_class=OffLoopRoute)


@router.get("", response_model=Health, summary="Health check (with a database round trip)",
            responses={503: {"model": Health, "description": "The database does not answer."}})
def health(store: StoreDep) -> Health | JSONResponse:
    result = ops.health(store=store)
    return result if result.status == "ok" else JSONResponse(status_code=503, content=result.model_dump())
