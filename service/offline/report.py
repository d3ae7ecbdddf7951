"""The replay's summary for a person: what was auto-labeled and how well, what went to humans, how the agent got
there. ``labelagent replay`` prints it; ``--json`` prints every figure instead
(:func:`service.offline.replay.summarize`, or the HTTP replay's summary: the same keys and more)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


def _share(part: int, whole: int) -> str:
    return f"{part / whole:.1%}" if whole else "-"


def _precision(summary: Mapping[str, Any]) -> str:
    precision, target = summary.get("auto_precision"), summary["target_precision"]
    if precision is None:
        return f"nothing auto-labeled (target {target})"
    lo, hi = summary.get("auto_precision_ci") or (None, None)
    interval = f" (95% CI {lo:.4f}-{hi:.4f})" if lo is not None else ""
    verdict = "held" if precision >= target else "NOT held"
    return f"precision {precision:.4f}{interval}, target {target}: {verdict}"


def _tools(summary: Mapping[str, Any]) -> str | None:
    calls: Mapping[str, int] = summary.get("tool_calls") or {}
    if not calls:
        return None
    weights: Mapping[str, float] = summary.get("tool_weights") or {}
    reach: Mapping[str, float] = summary.get("tool_reach") or {}
    parts = []
    for name, n in calls.items():
        part = f"{name} reach {reach[name]:.0%}" if name in reach else f"{name} {n:,} items"
        if name in weights:
            part += f", weight {weights[name]:.2f}"
        parts.append(part)
    return "tools: " + "; ".join(parts)


def _errors(summary: Mapping[str, Any]) -> str | None:
    by_truth: Mapping[str, Mapping[str, Any]] = summary.get("auto_errors_by_truth") or {}
    wrong = sorted(((lab, v) for lab, v in by_truth.items() if v.get("wrong")), key=lambda kv: -kv[1]["wrong"])
    if not wrong:
        return None
    shown = "; ".join(f"{lab} {v['wrong']} of {v['auto']}" for lab, v in wrong[:5])
    more = f" (and {len(wrong) - 5} more labels)" if len(wrong) > 5 else ""
    return f"auto-label errors by true label: {shown}{more}"


def _every_item(threshold: float, n_labels: int | None) -> str:
    """A threshold at or under 1/L lets every item through: the top label's pooled share is never below 1/L."""
    if not n_labels or threshold > 1.0 / n_labels:
        return ""
    return f" (at or under 1/{n_labels}: every item clears it)"


def _agent(summary: Mapping[str, Any]) -> str:
    threshold, n_labels = summary.get("threshold"), summary.get("labels")
    parts = [f"threshold {threshold}{_every_item(threshold, n_labels)}" if threshold is not None
             else "no certified threshold at the end"]
    if summary.get("certificate_losses") is not None:
        parts.append(f"certificate lost {summary['certificate_losses']} times")
    if summary.get("retrains") is not None:
        parts.append(f"{summary['retrains']} retrains")
    if summary.get("agent_accuracy") is not None:
        parts.append(f"agent right on {summary['agent_accuracy']:.1%} of all items")
    return "; ".join(parts)


def report(summary: Mapping[str, Any]) -> str:
    """A few lines for a person (the summary's keys as :func:`service.offline.replay.summarize` writes them)."""
    n, auto, human = summary["items"], summary["auto_labeled"], summary["human_reviews"]
    speed = f" ({summary['items_per_s']:,.0f} items/s)" if summary.get("items_per_s") else ""
    audits = summary.get("audits") or 0
    lines = [f"{summary.get('policy', 'replay')}: {n:,} items in {summary.get('seconds', 0):.1f} s{speed}",
             f"  auto-labeled {auto:>8,} ({_share(auto, n)})  {_precision(summary)}",
             f"  to humans    {human:>8,} ({_share(human, n)})  {audits:,} of them audits of would-be auto labels",
             f"  {_agent(summary)}"]
    lines += [f"  {line}" for line in (_tools(summary), _errors(summary)) if line]
    failures: Mapping[str, Any] = summary.get("tool_failures") or {}
    if failures:
        lines.append("  tool failures (graph runs): " + ", ".join(f"{t} {c}" for t, c in failures.items()))
    if summary.get("unlabeled"):
        lines.append(f"  WARNING: {summary['unlabeled']:,} items left without a label")
    lines.append("every figure: --json")
    return "\n".join(lines)
