"""The API's routers, one module per resource; :data:`routers` is what the app includes, in order."""

from __future__ import annotations

from fastapi import APIRouter

from service.api.routes import (
    audit,
    backtests,
    demo,
    health,
    items,
    labels,
    labelstudio,
    metrics,
    policies,
    projects,
    reviews,
    ui,
)

routers: tuple[APIRouter, ...] = (
    projects.router,
    items.router,
    labels.router,
    reviews.project_router,
    reviews.router,
    policies.router,
    backtests.router,
    audit.router,
    metrics.router,
    demo.router,
    health.router,
    *labelstudio.routers,
    ui.router,
)

__all__ = ["routers"]
