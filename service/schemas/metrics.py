"""Metrics of one project, and the health check."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from service.models import ModelVersionPublic


class Throughput(BaseModel):
    labeled_last_minute: int
    labeled_last_hour: int
    ingested_last_minute: int
    ingested_last_hour: int


class QueueMetrics(BaseModel):
    depth: int = Field(description="Tasks not done (open + claimed).")
    open: int
    claimed: int
    done: int
    oldest_age_seconds: float | None = Field(description="Age of the oldest task not done.")


class PrecisionMetrics(BaseModel):
    """Realized precision of auto labels, measured by audits (the agent's hidden label against the human's)."""

    audits: int
    correct: int
    estimate: float | None
    ci_low: float
    ci_high: float
    level: float = 0.95


class AgreementMetrics(BaseModel):
    """Among tasks answered by two reviewers or more (the most recent 5,000)."""

    tasks: int
    unanimous: int
    unanimous_rate: float | None
    pairwise: float | None = Field(description="Share of answer pairs on a task that agree.")


class ProjectMetrics(BaseModel):
    project: str
    active_version: int | None
    items: dict[str, int] = Field(description="Items by status (pending, leased, labeled, in_review, failed).")
    labels: dict[str, int] = Field(description="Labels by source (agent, human).")
    throughput: Throughput
    queue: QueueMetrics
    auto_rate: float | None = Field(description="Agent decisions that were auto labels (not sent to review).")
    precision: PrecisionMetrics
    threshold: float | None = Field(description="Threshold of the latest auto label.")
    agreement: AgreementMetrics
    model_versions: list[ModelVersionPublic] = Field(description="The latest model version of each tool.")


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    database: str
