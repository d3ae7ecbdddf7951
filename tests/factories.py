"""Builders for test data: policies, items, votes, decisions, batch results and replay summaries with sensible
defaults."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent.ports import BatchResult, Decision
from policies import Policy, RandomSpec, Rule, RulesSpec
from tools.base import Item, Vote

LABELS = ("ham", "spam")


def make_policy(project: str = "demo", *, labels: Sequence[str] = LABELS, version: int = 1, **overrides: Any) -> Policy:
    """A valid small policy: a keyword rule set and a random control voter."""
    fields: dict[str, Any] = {
        "project": project,
        "version": version,
        "labels": list(labels),
        "target_precision": 0.95,
        "tools": [
            RulesSpec(name="rules", rules=[Rule(label=labels[-1], keywords=["win", "free"])]),
            RandomSpec(name="random"),
        ],
    }
    fields.update(overrides)
    return Policy(**fields)


def make_items(n: int, *, prefix: str = "item", start: int = 0, with_metadata: bool = True) -> list[Item]:
    """``n`` text items with keys ``{prefix}-{i:06d}`` (sortable, unique)."""
    return [
        Item(key=f"{prefix}-{i:06d}", text=f"message number {i}: win a free prize" if i % 3 == 0 else f"hello {i}",
             metadata={"i": i, "source": "test"} if with_metadata else {})
        for i in range(start, start + n)
    ]


def make_votes(labels: Sequence[str] = LABELS, *, tools: Sequence[str] = ("rules", "random", "clf"),
               top: int = 0, abstain: Sequence[str] = ()) -> list[Vote]:
    """One vote per tool, favouring ``labels[top]``; tools in ``abstain`` abstain."""
    out = []
    for tool in tools:
        if tool in abstain:
            out.append(Vote(tool=tool, distribution=None, cost=0.1, evidence=f"{tool}: no match"))
            continue
        rest = 0.2 / (len(labels) - 1)
        dist = {lab: (0.8 if i == top else rest) for i, lab in enumerate(labels)}
        out.append(Vote(tool=tool, distribution=dist, cost=1.0, evidence=f"{tool} says {labels[top]}"))
    return out


def make_decision(key: str, action: str = "accept", *, label: str | None = "ham", confidence: float = 0.97,
                  votes: list[Vote] | None = None, priority: float = 0.0, review_kind: str | None = None,
                  labels: Sequence[str] = LABELS) -> Decision:
    if votes is None:
        votes = make_votes(labels, top=list(labels).index(label) if label in labels else 0)
    return Decision(
        key=key, action=action, label=label, confidence=confidence, votes=votes,  # type: ignore[arg-type]
        reason=f"{action} at {confidence:.2f}", cost=2.1, review_kind=review_kind, priority=priority,  # type: ignore[arg-type]
    )


def make_batch_result(policy: Policy, items: Sequence[Item], actions: Sequence[str] | str = "accept", *,
                      threshold: float | None = 0.9, n_tools: int = 3) -> BatchResult:
    """One decision per item; ``actions`` is one action for all or one per item. Labels alternate."""
    if isinstance(actions, str):
        actions = [actions] * len(items)
    tools = ("rules", "random", "clf", "retrieval")[:n_tools]
    decisions = []
    for i, (item, action) in enumerate(zip(items, actions, strict=True)):
        label = policy.labels[i % len(policy.labels)]
        votes = make_votes(policy.labels, tools=tools, top=i % len(policy.labels), abstain=("rules",) if i % 2 else ())
        decisions.append(make_decision(item.key, action, label=label, confidence=0.5 + (i % 50) / 100, votes=votes,
                                       priority=float(i % 7), labels=policy.labels))
    return BatchResult(policy_key=policy.key, threshold=threshold, model_versions={t: f"{t}-v1" for t in tools},
                       decisions=decisions)


def make_replay_summary(items: int = 100, auto_labeled: int = 60, *, auto_precision: float | None = 0.98,
                        **overrides: Any) -> dict[str, Any]:
    """A replay summary shaped like ``service.offline.replay.summarize``'s (what a backtest stores per version)."""
    summary: dict[str, Any] = {
        "items": items, "auto_labeled": auto_labeled, "human_reviews": items - auto_labeled,
        "human_review_rate": round((items - auto_labeled) / items, 4) if items else 0.0, "audits": 2,
        "auto_precision": auto_precision, "auto_precision_ci": [0.9, 0.999], "overall_accuracy": 0.99,
        "agent_accuracy": 0.95, "target_precision": 0.95, "unlabeled": 0, "items_per_s": 50.0, "seconds": 2.0,
        "tool_calls": {"rules": 3}, "tool_weights": {"rules": 1.0}, "aggregator": {}, "threshold": 0.9,
        "retrains": 1, "model_versions": {}, "policy": "demo@1",
    }
    return summary | overrides


SHARED_DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def dataset_path(name: str) -> Path:
    """A file of ``<repo>/../shared/data``; the test is skipped with a clear message when it is absent."""
    import pytest

    path = SHARED_DATA / name
    if not path.exists():
        pytest.skip(f"dataset {path.resolve()} is not present; put {name} in <repo>/../shared/data to run this test")
    return path
