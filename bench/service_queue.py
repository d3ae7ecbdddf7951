"""The service benchmark's finite reviewers (issue 20): the review queue of the real service (API and worker
processes over HTTP) when people answer slower than the stream arrives.

The stream arrives ``WINDOW`` items at a time, one window every ``PERIOD`` seconds (a fixed arrival rate); after
each window is decided, one reviewer client answers what ``rate`` answers per arriving item allows (the replay's
``--reviewer-rate``: 0.1 is one answer for every ten items), taking tasks through ``POST /reviews/claim`` as a person
would, and banks nothing while the queue is empty. After the stream the windows go on without items (the clock runs,
the reviewers keep answering at the same rate) until the queue is empty or ``DRAIN_LIMIT`` stream lengths have
passed. Meanwhile the worker learns from the answers on its own schedule and, with each new certified snapshot,
re-decides what waits: what it takes over is read from ``GET /projects/{p}/metrics`` (``queue.taken_over``).

Reported as the replay reports it: human answers, items the agent took over while they waited (and how many were
right), the largest queue depth, the wait from arrival to answer (in items of stream time), what was left when the
stream ended and how long the drain took, auto-label precision against the dataset.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy import select

from bench.service_driver import Bench
from bench.service_report import percentile
from policies import Policy
from service.offline.datasets import LabeledItem
from service.store.base import item_t, label_t

WINDOW = 100  # items per arrival
PERIOD = 0.25  # seconds between arrivals: 400 items/s
RATE = 0.1  # answers per arriving item
DRAIN_LIMIT = 10  # stream lengths of drain at most


@dataclass
class Clock:
    """Stream time in items, the reviewers' earned answers, and each item's arrival time."""

    rate: float
    now: int = 0
    budget: float = 0.0
    arrived: dict[str, int] = field(default_factory=dict)
    waits: list[int] = field(default_factory=list)
    answers: int = 0
    max_depth: int = 0

    def tick(self, items: int) -> int:
        """``items`` of stream time pass; returns the whole answers the reviewers may give now."""
        self.now += items
        self.budget += self.rate * items
        return math.floor(self.budget)


async def answer(bench: Bench, http: httpx.AsyncClient, project: str, clock: Clock, want: int) -> None:
    """Claim and answer up to ``want`` tasks from the dataset; an empty queue ends the turn (idle: nothing banked)."""
    given = 0
    while given < want:
        r = await http.post(f"/projects/{project}/reviews/claim", json={"reviewer": "bench-finite"})
        if r.status_code == 204:
            clock.budget = min(clock.budget, given + 1.0)
            break
        r.raise_for_status()
        task = r.json()
        key = task["item"]["external_id"]
        s = await http.post(f"/reviews/{task['task_id']}/submit",
                            json={"lease_token": task["lease_token"], "label": bench.truth[key]})
        s.raise_for_status()
        given += 1
        clock.waits.append(clock.now - clock.arrived.get(key, clock.now))
    clock.budget -= given
    clock.answers += given


async def finite_reviewers(bench: Bench, project: str, policy: Policy, rows: Sequence[LabeledItem],
                           rate: float = RATE) -> dict[str, Any]:
    """Run ``rows`` through ``project`` (created with ``policy``) with reviewers at ``rate``; the figures."""
    await bench.create_project(project, policy)
    n = len(rows)
    clock = Clock(rate)
    left_at_end: int | None = None
    t0 = time.perf_counter()
    async with bench.client(bench.operator) as op, bench.client(bench.reviewer_keys[0]) as http:
        window = 0
        while clock.now < (1 + DRAIN_LIMIT) * n:
            part = rows[window * WINDOW:(window + 1) * WINDOW]
            if part:
                await bench.ingest(op, project, part)
                clock.arrived.update((r.item.key, clock.now) for r in part)
                await bench.wait_for(lambda: bench.decided(project), f"window {window} decided")
            depth = bench.counts(project)["in_review"]
            clock.max_depth = max(clock.max_depth, depth)
            if not part and left_at_end is None:
                left_at_end = depth
            if not part and depth == 0:
                break
            await answer(bench, http, project, clock, clock.tick(len(part) or WINDOW))
            window += 1
            await asyncio.sleep(max(0.0, t0 + window * PERIOD - time.perf_counter()))
        metrics = (await op.get(f"/projects/{project}/metrics")).json()
    return _figures(bench, project, clock, n, left_at_end or 0, metrics, time.perf_counter() - t0)


def _figures(bench: Bench, project: str, clock: Clock, n: int, left_at_end: int, metrics: dict[str, Any],
             seconds: float) -> dict[str, Any]:
    pid = bench.store.projects.get_project(project).id
    with bench.engine.connect() as conn:
        labels = conn.execute(select(item_t.c.external_id, label_t.c.label, label_t.c.source, label_t.c.reason)
                              .join(label_t, label_t.c.item_id == item_t.c.id).where(item_t.c.project_id == pid))
        agent = [(str(key), str(label), str(reason or "")) for key, label, source, reason in labels
                 if source == "agent"]
    right = [bench.truth[key] == label for key, label, _ in agent]
    taken = [bench.truth[key] == label for key, label, reason in agent if reason.startswith("re-decided")]
    drain = max(0, clock.now - n) if left_at_end else 0
    return {"database": bench.db.name, "items": n, "rate": clock.rate, "human_answers": clock.answers,
            "auto_labeled": len(agent), "auto_precision": sum(right) / len(right) if right else None,
            "taken_over": int(metrics["queue"]["taken_over"]), "taken_over_checked": len(taken),
            "taken_over_precision": sum(taken) / len(taken) if taken else None, "max_depth": clock.max_depth,
            "wait_mean": sum(clock.waits) / len(clock.waits) if clock.waits else 0.0,
            "wait_p90": percentile(clock.waits, 0.9), "left_at_end": left_at_end, "drain_share": drain / n,
            "queue_left": metrics["queue"]["depth"], "seconds": seconds}
