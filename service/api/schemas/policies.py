"""Policy versions: list, create, backtest (and stored backtests), activate, roll back; and the audit log."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from service.api.schemas.common import PolicyInput, Reason, Request
from service.store.ops_models import AuditEventPublic
from service.store.tables import PolicyVersionPublic


class PolicyCreateRequest(Request):
    policy: PolicyInput = Field(description="The new version: a JSON object or its YAML text. `project` defaults to "
                                            "the project; `version` is assigned (the next one) when omitted.")
    activate: bool = Field(default=False, description="Make it the active version at once.")
    reason: Reason = ""


class PolicyChangeRequest(Request):
    reason: Reason = Field(default="", description="Why; kept in the audit log.")


class ActivationResponse(BaseModel):
    project: str
    active_version: int
    previous_version: int | None


class BacktestRequest(Request):
    limit: int = Field(default=2000, ge=1, le=100_000, description="Replay the most recent N ground-truth items.")
    batch_size: int = Field(default=128, ge=1, le=1000, description="Items per graph run.")
    seed: int = Field(default=0, ge=0, le=2**32 - 1)


class BacktestFigures(BaseModel):
    policy_version: int
    items: int = Field(description="Ground-truth items replayed (those whose label is in this version's label set).")
    auto_labeled: int
    auto_rate: float | None
    auto_precision: float | None = Field(description="Share of auto labels equal to the ground truth.")
    auto_precision_ci: tuple[float, float] = Field(description="95% Clopper-Pearson interval of auto_precision.")
    human_reviews: int
    audits: int
    threshold: float | None = Field(description="The threshold at the end of the replay.")
    seconds: float
    overall_accuracy: float | None = Field(default=None, description="Share of final labels (auto and human) equal "
                                                                     "to the ground truth.")
    agent_accuracy: float | None = Field(default=None, description="Share of the agent's own labels (its suggestion "
                                                                   "where a human decided) equal to the ground truth.")
    target_precision: float | None = Field(default=None, description="The version's target precision.")


class BacktestResponse(BaseModel):
    id: int = Field(description="The stored backtest's id: `GET /projects/{project}/backtests/{id}` reads it again.")
    created_at: datetime
    requested_by: str = Field(description="Who ran it (the caller's principal, as in the audit log).")
    project: str
    request: BacktestRequest = Field(description="The parameters it ran with.")
    ground_truth: int = Field(description="Ground-truth items available (human reviews and client labels).")
    candidate: BacktestFigures
    active: BacktestFigures = Field(description="The version active when it ran (the candidate's figures again when "
                                                "the candidate was the active version).")


class BacktestPage(BaseModel):
    backtests: list[BacktestResponse] = Field(description="Newest first.")
    next_before: int | None = Field(description="Pass as `before` for the next (older) page; None when this page is "
                                                "the last.")


class PolicyVersionInfo(PolicyVersionPublic):
    active: bool
    policy: dict[str, Any] = Field(description="The policy as JSON.")
    latest_backtest: BacktestResponse | None = Field(default=None, description="The version's newest stored "
                                                                               "backtest, if it has one.")


class AuditPage(BaseModel):
    events: list[AuditEventPublic]
    next_after: int | None = Field(description="Pass as `after` for the next page; None when this page is the last.")
