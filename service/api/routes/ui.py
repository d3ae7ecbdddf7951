"""``/ui/review`` and ``/ui/operator``: the web pages (public: they hold no data; their API calls send a key), and
``/ui/static/...``, their assets (mounted by the app)."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import FileResponse, RedirectResponse

from service.api.gate import OffLoopRoute
from service.api.web import STATIC_DIR

router = APIRouter(prefix="/ui", tags=["ui"], include_in_schema=False, route_class=OffLoopRoute)

PAGES = ("/ui/review", "/ui/operator")


@router.get("", response_class=RedirectResponse)
def index() -> RedirectResponse:
    return RedirectResponse("/ui/review", status_code=307)


@router.get("/review", response_class=FileResponse)
def review_page() -> FileResponse:
    return FileResponse(STATIC_DIR / "review.html", media_type="text/html", headers={"Cache-Control": "no-cache"})


@router.get("/operator", response_class=FileResponse)
def operator_page() -> FileResponse:
    return FileResponse(STATIC_DIR / "operator.html", media_type="text/html", headers={"Cache-Control": "no-cache"})
