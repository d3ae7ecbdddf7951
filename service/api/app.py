"""The FastAPI app: ``create_app(settings, store=..., feedback=...)``. OpenAPI docs at ``/docs``.

Without a store, the lifespan opens an engine from the settings (``LABELAGENT_DATABASE_URL``) and disposes of it on
shutdown; the schema must exist (``labelagent db upgrade``, or ``service.store.db.create_all`` in tests). Routes are
plain functions run in the server's thread pool (the store is synchronous); the event stream is async and reads
the store in worker threads.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

from service.api.errors import ErrorBody, add_auth_docs, add_schemas, install_error_handlers
from service.api.gate import AuthFirstMiddleware
from service.api.limits import BodyLimitMiddleware
from service.api.ratelimit import RateLimiter
from service.api.routes import routers
from service.api.schemas.items import LabelRecord
from service.api.web import STATIC_DIR, UISecurityHeaders
from service.offline.demo.control import DemoControl
from service.runtime.feedback import FeedbackSink, NullSink
from service.settings import Settings, get_settings
from service.store import SqlStore
from service.store.db import engine_from_settings

DESCRIPTION = """Label a stream of items with an agent that auto-labels only above a calibrated threshold and
escalates the rest to a human review queue whose answers become ground truth.

Every route but `/health` needs an API key (`Authorization: Bearer <key>` or `X-API-Key: <key>`) of a role allowed
on the route (`ingest`, `reviewer`, `operator`) and scoped to the project; another project's objects answer 404.

Errors answer `{"error": {"type": ..., "message": ...}}` (request validation errors: FastAPI's `detail`)."""


def create_app(settings: Settings | None = None, *, store: SqlStore | None = None,
               feedback: FeedbackSink | None = None, demo: DemoControl | None = None) -> FastAPI:
    """The app. ``settings`` default to the store's, else to :func:`get_settings`; ``feedback`` is told about every
    submitted review (default: nobody); ``demo``: the simulation of ``labelagent demo`` when it runs beside."""
    settings = settings or (store.settings if store is not None else get_settings())

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if store is not None:
            yield
            return
        engine = engine_from_settings(settings)
        app.state.store = SqlStore(engine, settings)
        try:
            yield
        finally:
            engine.dispose()

    app = FastAPI(title="labelagent", version="0.1.0", description=DESCRIPTION, lifespan=lifespan,
                  docs_url="/docs" if settings.docs_enabled else None,
                  redoc_url="/redoc" if settings.docs_enabled else None, openapi_url="/openapi.json")
    app.state.store = store
    app.state.feedback = feedback if feedback is not None else NullSink()
    app.state.demo = demo
    app.state.rate_limiter = RateLimiter(settings.rate_limit_per_second, settings.rate_limit_burst)
    # on app.state, not in app.dependency_overrides: any override makes FastAPI rebuild every dependency of every
    # request from the signatures (measured: ~25% of a review request's CPU)
    app.state.settings = settings
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_body_bytes)
    app.add_middleware(AuthFirstMiddleware)  # outermost: authenticates before any byte of the body is read
    app.add_middleware(UISecurityHeaders)
    install_error_handlers(app)
    for router in routers:
        app.include_router(router)
    app.mount("/ui/static", StaticFiles(directory=STATIC_DIR), name="ui-static")

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            app.openapi_schema = add_auth_docs(add_schemas(FastAPI.openapi(app), (ErrorBody, LabelRecord)))
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]
    return app
