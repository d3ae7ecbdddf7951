"""Review tasks for the browser tests, put in the store the way a worker would (``record_batch``): SMS-like items
with the votes of a keyword rule set, a classifier and a retrieval tool that quotes its nearest labeled examples,
some with weather values in their metadata."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agent.ports import BatchResult, Decision
from service.store import ReviewAnswer, SqlStore
from tools.base import Item, Vote

SPAMMY = (
    "WINNER! You have won a free cruise, call 0800 now",
    "Free entry: text WIN to 80086 for a prize",
    "URGENT: your mobile number has won £2000, claim today",
)
HAMMY = (
    "Are we still on for lunch tomorrow?",
    "Sorry, running late, be there in 10",
    "Can you pick up some milk?",
    "Happy birthday! Hope you have a great day",
)


@dataclass(frozen=True)
class Seeded:
    keys: list[str]
    truth: dict[str, str]  # the label a careful reviewer gives each item
    kinds: dict[str, str]  # review kind by item key (accepted items are absent)


def _text(i: int) -> tuple[str, str]:
    if i % 3 == 0:
        return SPAMMY[i % len(SPAMMY)] + f" (#{i})", "spam"
    return HAMMY[i % len(HAMMY)] + f" (#{i})", "ham"


def _votes(label: str, other: str, i: int, *, wrong: bool) -> list[Vote]:
    said, unsure = (other, label) if wrong else (label, other)
    p = 0.6 + (i % 4) / 10
    neighbours = " | ".join(
        [
            f'sms-{100 + i} {said} 0.{80 - i % 9} "{SPAMMY[0] if said == "spam" else HAMMY[0]}"',
            f'sms-{300 + i} {said} 0.61 "{SPAMMY[1] if said == "spam" else HAMMY[2]}"',
            f'sms-{500 + i} {unsure} 0.42 "{HAMMY[3] if said == "spam" else SPAMMY[2]}"',
        ]
    )
    return [
        Vote(
            "rules",
            {said: 0.9, unsure: 0.1} if said == "spam" else None,
            0.0,
            "rules: spam 0.90 from free, win" if said == "spam" else "rules: no rule matched",
        ),
        Vote("clf", {said: p, unsure: 1 - p}, 0.001, f"clf-v2: {said} {p:.2f} (words: claim, free, call)"),
        Vote("retrieval", {said: 0.85, unsure: 0.15}, 0.002, f"knn-v2: {said} 0.85 from 3 neighbours; {neighbours}"),
    ]


def seed_tasks(
    store: SqlStore,
    project: str,
    actions: Sequence[str],
    *,
    start: int = 0,
    prefix: str = "sms",
    texts: dict[int, str] | None = None,
    metadata: dict[int, dict[str, Any]] | None = None,
    wrong: Sequence[int] = (),
    threshold: float | None = 0.9,
) -> Seeded:
    """One item per action ("escalate", "audit", "accept"); item ``start + i`` gets ``texts[i]`` if given. Items in
    ``wrong`` get the other label as the agent's suggestion. Every third item carries weather values."""
    items, truth = [], {}
    for i, _ in enumerate(actions):
        n = start + i
        text, label = _text(n)
        meta: dict[str, Any] = {"sender": f"+44 7700 900{n:03d}", "received": f"2026-11-2{n % 9}T0{n % 10}:15:00Z"}
        if n % 3 == 1:
            meta |= {"lat": 51.5, "lon": -0.12, "wx_temperature_2m": 7.5 + n % 5, "wx_wind_speed_10m": 18.0 + n}
        meta |= (metadata or {}).get(i, {})
        key = f"{prefix}-{n:04d}"
        items.append(Item(key=key, text=(texts or {}).get(i, text), metadata=meta))
        truth[key] = label
    store.items.ingest(project, items)
    decide_pending(store, project, actions, truth, start=start, wrong=wrong, threshold=threshold)
    kinds = {
        k: {"escalate": "escalation", "audit": "audit"}[a] for k, a in zip(truth, actions, strict=True) if a != "accept"
    }
    return Seeded([it.key for it in items], truth, kinds)


def decide_pending(
    store: SqlStore,
    project: str,
    actions: Sequence[str],
    truth: dict[str, str],
    *,
    start: int = 0,
    wrong: Sequence[int] = (),
    threshold: float | None = 0.9,
) -> None:
    """Record the agent's decisions on the pending items (``truth``'s keys, in that order), as a worker would."""
    token, claimed = store.items.claim_batch(project, worker="seed", size=len(truth))
    policy = store.projects.active_policy(project)
    by_key = dict(zip(truth, actions, strict=True))
    decisions = []
    for i, it in enumerate(claimed):
        label = truth[it.key]
        other = "ham" if label == "spam" else "spam"
        is_wrong = i in wrong
        decisions.append(
            Decision(
                key=it.key,
                action=by_key[it.key],  # type: ignore[arg-type]
                label=other if is_wrong else label,
                confidence=0.55 + (start + i) % 45 / 100,
                votes=_votes(label, other, start + i, wrong=is_wrong),
                reason="seeded",
                cost=0.003,
                review_kind=None,
                priority=float(len(claimed) - i),
            )
        )
    result = BatchResult(policy.key, threshold, {"clf": "clf-v2", "retrieval": "knn-v2"}, decisions)
    store.items.record_batch(project, result, token)


def answer_all(store: SqlStore, project: str, truth: dict[str, str], reviewer: str = "seed-reviewer") -> int:
    """Answer every open task from ``truth`` (one claim at a time); how many were answered."""
    n = 0
    while (task := store.reviews.claim_review(project, reviewer=reviewer)) is not None:
        store.reviews.submit_reviews([ReviewAnswer(task.task_id, task.token, truth[task.item.key])], project=project)
        n += 1
    return n
