"""Project metrics as JSON, the same numbers in Prometheus' text format, and the health check."""

from __future__ import annotations

from collections.abc import Collection
from datetime import datetime, timedelta

from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from agent.calibration import cp_interval
from service.api.schemas.metrics import (
    AgreementMetrics,
    Health,
    PrecisionMetrics,
    ProjectMetrics,
    QueueMetrics,
    SnapshotMetrics,
    Throughput,
)
from service.store import SqlStore
from service.store.tables import ModelVersionPublic, utcnow

LEVEL = 0.95


def _latest_per_tool(versions: list[ModelVersionPublic]) -> list[ModelVersionPublic]:
    latest: dict[str, ModelVersionPublic] = {}
    for v in versions:  # oldest first: later ones replace earlier ones
        latest[v.tool] = v
    return sorted(latest.values(), key=lambda v: v.tool)


def project_metrics(*, store: SqlStore, project: str, now: datetime | None = None) -> ProjectMetrics:
    now = now or utcnow()
    info = store.projects.get_project(project)
    items = store.items.count_items(project)
    tasks = store.reviews.count_tasks(project)
    labels = store.learning.count_labels(project)
    since = [now - timedelta(minutes=1), now - timedelta(hours=1)]
    labeled = store.learning.labeled_since(project, since)
    ingested = store.learning.ingested_since(project, since)
    oldest = store.learning.oldest_open_task(project)
    audits, correct = store.learning.audit_outcomes(project)
    lo, hi = cp_interval(correct, audits, LEVEL)
    agreement = store.learning.reviewer_agreement(project)
    corrections = store.audit.count_corrections(project)
    # every agent decision is an auto label or a review task; a corrected auto label's row was replaced
    auto = labels["agent"] + corrections["agent"]
    taken_over = store.reviews.redecided_count(project)  # i20: an auto label and a done task for the same decision
    decided = auto + sum(tasks.values()) - taken_over
    return ProjectMetrics(
        project=project,
        active_version=info.active_version,
        items=items,
        labels=labels,
        corrections=corrections,
        throughput=Throughput(labeled_last_minute=labeled[0], labeled_last_hour=labeled[1],
                              ingested_last_minute=ingested[0], ingested_last_hour=ingested[1]),
        queue=QueueMetrics(depth=tasks["open"] + tasks["claimed"], open=tasks["open"], claimed=tasks["claimed"],
                           done=tasks["done"], taken_over=taken_over,
                           oldest_age_seconds=None if oldest is None else max(0.0, (now - oldest).total_seconds())),
        auto_rate=auto / decided if decided else None,
        precision=PrecisionMetrics(audits=audits, correct=correct, estimate=correct / audits if audits else None,
                                   ci_low=lo, ci_high=hi, level=LEVEL),
        threshold=store.learning.latest_threshold(project),
        agreement=AgreementMetrics(
            tasks=agreement.tasks, unanimous=agreement.unanimous,
            unanimous_rate=agreement.unanimous / agreement.tasks if agreement.tasks else None,
            pairwise=agreement.agreeing_pairs / agreement.pairs if agreement.pairs else None),
        model_versions=_latest_per_tool(store.learning.list_model_versions(project)),
        snapshot=_snapshot_metrics(store, project),
        tool_failures=store.audit.count_tool_failures(project),
    )


def _snapshot_metrics(store: SqlStore, project: str) -> SnapshotMetrics:
    s = store.learning.snapshot_summary(project)
    n, ok = s.would_accept_audits, s.would_accept_correct
    lo, hi = cp_interval(ok, n, LEVEL)
    return SnapshotMetrics(latest_id=s.latest_id, threshold=s.threshold, snapshots=s.snapshots,
                           would_accept=PrecisionMetrics(audits=n, correct=ok, estimate=ok / n if n else None,
                                                         ci_low=lo, ci_high=hi, level=LEVEL))


# --- Prometheus text exposition (format 0.0.4), written by hand ---------------------------------------------------

PROMETHEUS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _number(value: float) -> str:
    return repr(float(value)) if isinstance(value, float) else str(value)


class _Exposition:
    def __init__(self) -> None:
        self.families: dict[str, tuple[str, str, list[str]]] = {}

    def add(self, name: str, kind: str, help_: str, value: float | None, **labels: str) -> None:
        if value is None:
            return
        family = self.families.setdefault(name, (kind, help_, []))
        label_text = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
        family[2].append(f"{name}{{{label_text}}} {_number(value)}" if labels else f"{name} {_number(value)}")

    def render(self) -> str:
        lines: list[str] = []
        for name, (kind, help_, samples) in self.families.items():
            lines += [f"# HELP {name} {help_}", f"# TYPE {name} {kind}", *samples]
        return "\n".join(lines) + "\n"


def prometheus_text(*, store: SqlStore, now: datetime | None = None, projects: Collection[str] | None = None) -> str:
    """Every project's metrics (or only ``projects``'s) as Prometheus gauges (``labelagent_*``, label ``project``)."""
    out = _Exposition()
    shown = [p for p in store.projects.list_projects() if projects is None or p.name in projects]
    out.add("labelagent_projects", "gauge", "Projects.", len(shown))
    for project in shown:
        m = project_metrics(store=store, project=project.name, now=now)
        p = project.name
        for status, n in m.items.items():
            out.add("labelagent_items", "gauge", "Items by status.", n, project=p, status=status)
        for source, n in m.labels.items():
            out.add("labelagent_labels", "gauge", "Labels by source.", n, project=p, source=source)
        for source, n in m.corrections.items():
            out.add("labelagent_label_corrections", "gauge", "Label corrections by the replaced label's source.", n,
                    project=p, source=source)
        for status in ("open", "claimed", "done"):
            out.add("labelagent_review_tasks", "gauge", "Review tasks by status.", getattr(m.queue, status),
                    project=p, status=status)
        out.add("labelagent_review_queue_depth", "gauge", "Review tasks not done.", m.queue.depth, project=p)
        out.add("labelagent_review_tasks_taken_over", "gauge", "Waiting review tasks the agent auto-labeled itself.",
                m.queue.taken_over, project=p)
        out.add("labelagent_review_queue_oldest_age_seconds", "gauge", "Age of the oldest review task not done.",
                m.queue.oldest_age_seconds, project=p)
        out.add("labelagent_labeled_last_minute", "gauge", "Labels written in the last minute.",
                m.throughput.labeled_last_minute, project=p)
        out.add("labelagent_labeled_last_hour", "gauge", "Labels written in the last hour.",
                m.throughput.labeled_last_hour, project=p)
        out.add("labelagent_ingested_last_minute", "gauge", "Items ingested in the last minute.",
                m.throughput.ingested_last_minute, project=p)
        out.add("labelagent_ingested_last_hour", "gauge", "Items ingested in the last hour.",
                m.throughput.ingested_last_hour, project=p)
        out.add("labelagent_auto_rate", "gauge", "Share of agent decisions that were auto labels.", m.auto_rate,
                project=p)
        out.add("labelagent_audits", "gauge", "Audits settled.", m.precision.audits, project=p)
        out.add("labelagent_audits_correct", "gauge", "Audits where the hidden agent label was right.",
                m.precision.correct, project=p)
        out.add("labelagent_auto_precision", "gauge", "Realized auto-label precision from audits.",
                m.precision.estimate, project=p)
        out.add("labelagent_auto_precision_ci_low", "gauge", "Lower end of its 95% Clopper-Pearson interval.",
                m.precision.ci_low, project=p)
        out.add("labelagent_auto_precision_ci_high", "gauge", "Upper end of its 95% Clopper-Pearson interval.",
                m.precision.ci_high, project=p)
        out.add("labelagent_threshold", "gauge", "Confidence threshold of the latest auto label.", m.threshold,
                project=p)
        out.add("labelagent_reviewer_pairwise_agreement", "gauge", "Agreeing answer pairs on multi-reviewer tasks.",
                m.agreement.pairwise, project=p)
        if m.snapshot is not None:
            out.add("labelagent_snapshot_id", "gauge", "The certified snapshot most recently persisted.",
                    m.snapshot.latest_id, project=p)
            out.add("labelagent_would_accept_precision", "gauge",
                    "Realized precision over audits of would-be auto labels.", m.snapshot.would_accept.estimate,
                    project=p)
        out.add("labelagent_active_policy_version", "gauge", "Active policy version.", m.active_version, project=p)
        for tool, n in m.tool_failures.items():
            out.add("labelagent_tool_failures_total", "counter", "Graph runs in which the tool's call failed.", n,
                    project=p, tool=tool)
    return out.render()


def health(*, store: SqlStore) -> Health:
    try:
        with store.engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except SQLAlchemyError as exc:
        return Health(status="unavailable", database=f"{type(exc).__name__}: {str(exc).splitlines()[0]}")
    return Health(status="ok", database="ok")
