"""Metrics of one project, and the health check."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from service.store.tables import ModelVersionPublic


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
    taken_over: int = Field(0, description="Waiting tasks the agent closed itself: a new certified snapshot "
                                           "auto-labeled their items (re-decision, no human answer).")


class PrecisionMetrics(BaseModel):
    """Realized precision of auto labels, measured by audits (the agent's hidden label against the human's)."""

    audits: int
    correct: int
    estimate: float | None
    ci_low: float
    ci_high: float
    level: float = 0.95


class SnapshotMetrics(BaseModel):
    """The certified snapshots (issue 14): every auto label and audit names the snapshot that decided it."""

    latest_id: int | None = Field(description="The snapshot most recently persisted (what workers decide with).")
    threshold: float | None = Field(description="Its certified threshold (None: no certificate in force).")
    snapshots: int = Field(description="Snapshots persisted in the project.")
    would_accept: PrecisionMetrics = Field(
        description="Realized precision over audits of would-be auto labels only: audits whose item the deciding "
                    "snapshot would have auto-labeled (uniform audits below its threshold left out).")


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
    corrections: dict[str, int] = Field(
        default_factory=lambda: {"agent": 0, "human": 0},
        description="Label corrections by the source of the label they replaced: `agent` counts auto labels found "
                    "wrong after the fact. Not used by the precision estimate or the drift check (audits only: "
                    "corrections are not a uniform sample).")
    throughput: Throughput
    queue: QueueMetrics
    auto_rate: float | None = Field(description="Agent decisions that were auto labels (not sent to review).")
    precision: PrecisionMetrics
    threshold: float | None = Field(description="Threshold of the latest auto label.")
    agreement: AgreementMetrics
    model_versions: list[ModelVersionPublic] = Field(description="The latest model version of each tool.")
    snapshot: SnapshotMetrics | None = Field(default=None, description="Certified snapshots (issue 14).")
    tool_failures: dict[str, int] = Field(
        default_factory=dict,
        description="Graph runs in which each tool's call failed (the audit log's `tool.failed`): a cheap voting "
                    "tool's failure keeps its items from auto-labeling, a dear tool's those its vote could overturn.")


class Health(BaseModel):
    status: Literal["ok", "unavailable"]
    database: str


class CalibrationPoint(BaseModel):
    """Auto-labelling every calibration item at or above ``threshold``: the share labeled and how many were right."""

    threshold: float
    coverage: float = Field(description="Share of the calibration items at or above the threshold.")
    precision: float = Field(description="Share of those whose agent label equals the human answer.")
    precision_low: float = Field(description="One-sided Clopper-Pearson lower bound at 1 - delta.")
    n: int = Field(description="Calibration items at or above the threshold.")


class CriticalLabelCalibration(BaseModel):
    """A critical label's own calibration sample (``critical_labels`` in the policy): the threshold's test must also
    pass on these items alone, so a rare critical label holds the certificate back until it has ``needed`` of them,
    error-free, above the threshold."""

    label: str
    records: int = Field(description="Calibration items whose human answer is this label.")
    above_threshold: int = Field(description="Those at or above the threshold in force (0 when none is in force).")
    errors_above: int = Field(description="Those among them the agent labeled otherwise.")
    needed: int = Field(description="The fewest error-free items of the label above a threshold that can pass "
                                    "under the policy's certification rule (per_batch: log(delta) / log(1 - alpha)).")


class CalibrationCurve(BaseModel):
    """Precision versus coverage on the calibration sample (cold-start items and audits, the most recent
    ``calibration_window``), highest threshold first."""

    project: str
    records: int
    target_precision: float
    delta: float
    threshold: float | None = Field(description="Threshold of the latest auto label (None: none yet).")
    points: list[CalibrationPoint]
    critical: list[CriticalLabelCalibration] = Field(
        default_factory=list, description="Each critical label's own calibration sample, in the policy's order.")


class PrecisionPoint(BaseModel):
    at: datetime = Field(description="When the last audit counted here settled.")
    audits: int = Field(description="Audits settled up to then.")
    correct: int
    estimate: float
    ci_low: float
    ci_high: float


class PrecisionHistory(BaseModel):
    """Realized auto-label precision from audits, cumulative over time (at most ``max_points`` points)."""

    project: str
    level: float
    points: list[PrecisionPoint]


class ToolStats(BaseModel):
    tool: str
    votes: int = Field(description="Times the tool was called on an item (votes recorded, abstentions included).")
    abstains: int
    cost: float = Field(description="Sum of the cost of its votes.")
    accuracy: float | None = Field(description="Share of its (non-abstaining) votes on ground-truth items whose top "
                                               "label is the truth.")
    weight: float | None = Field(description="Its weight in the log-linear pool refitted on the recent ground truth "
                                             "(None: too few of its votes to fit).")


class ToolReport(BaseModel):
    """Each tool's value (accuracy, pooled weight) against its cost, over the project's recorded votes."""

    project: str
    ground_truth: int = Field(description="Recent ground-truth items with votes, used for accuracy and weights.")
    tools: list[ToolStats]
