"""The replay's simulated reviewers (issue 20): an oracle that answers from the dataset's labels, either everything
queued before the next graph run (``rate`` None, the replay's default) or at most ``rate`` answers per arriving item
(``labelagent replay --reviewer-rate R``: 0.25 is one answer for every four items that arrive).

Time is counted in items of the stream: the clock advances by the items each graph run decides, and the reviewers
earn ``rate`` answers per item; they take the queue's best tasks (highest priority, then oldest), as the claim route
gives them to people. After the stream ends no item arrives but the clock goes on (:meth:`Reviewers.tick`) and the
reviewers drain the queue at the same rate.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from agent.ports import GroundTruth
from policies import InputError
from service.store import ReviewAnswer, SqlStore

ORACLE = "oracle"
CLAIM_LIMIT = 10_000


@dataclass(slots=True)
class Reviewers:
    rate: float | None = None  # answers per arriving item; None: every queued task before the next graph run
    clock: int = 0  # stream time, in items
    budget: float = 0.0  # answers earned and not given yet
    queued_at: dict[str, int] = field(default_factory=dict)  # item key -> stream time its task was queued
    waits: list[int] = field(default_factory=list)  # stream time from queueing to answer, per answered item
    max_depth: int = 0
    answers: int = 0
    taken_over: int = 0  # waiting items the agent labeled itself (re-decided)
    taken_over_correct: int = 0  # ... with the dataset's label

    def __post_init__(self) -> None:
        if self.rate is not None and not 0.0 < self.rate <= 1000.0:
            raise InputError(f"reviewer rate must be in (0, 1000] answers per arriving item, got {self.rate}")

    def tick(self, items: int) -> None:
        """``items`` of stream time pass (items decided, or after the stream: time without arrivals)."""
        self.clock += items
        if self.rate is not None:
            self.budget += self.rate * items

    def queued(self, keys: list[str]) -> None:
        for key in keys:
            self.queued_at.setdefault(key, self.clock)

    def took_over(self, labels: dict[str, str], truth: dict[str, str]) -> None:
        for key, label in labels.items():
            if self.queued_at.pop(key, None) is not None:
                self.taken_over += 1
                self.taken_over_correct += truth[key] == label

    def answer(self, store: SqlStore, project: str, truth: dict[str, str]) -> list[GroundTruth]:
        """Answer what the rate allows now (everything without a rate), in one transaction per claim."""
        settled: list[GroundTruth] = []
        while True:
            want = CLAIM_LIMIT if self.rate is None else min(CLAIM_LIMIT, math.floor(self.budget))
            if want <= 0:
                break
            tasks = store.reviews.claim_reviews(project, reviewer=ORACLE, limit=want)
            if self.rate is not None:
                self.budget -= len(tasks)
                if len(tasks) < want:
                    self.budget = min(self.budget, 1.0)  # the queue ran empty: idle reviewers bank no answers
            if not tasks:
                break
            result = store.reviews.submit_reviews([ReviewAnswer(t.task_id, t.token, truth[t.item.key]) for t in tasks],
                                          project=project)
            self.answers += len(tasks)
            for gt in result.settled:
                self.waits.append(self.clock - self.queued_at.pop(gt.item.key, self.clock))
            settled.extend(result.settled)
            if len(tasks) < want and not any(t.answers_needed > t.answers + 1 for t in tasks):
                break  # the queue is empty (overlap > 1 may reopen tasks: then look again)
        return settled

    def depth(self, store: SqlStore, project: str) -> int:
        counts = store.reviews.count_tasks(project)
        depth = counts["open"] + counts["claimed"]
        self.max_depth = max(self.max_depth, depth)
        return depth

    def summary(self, stream: int, left_at_end: int, drain: int | None, left: int) -> dict[str, Any]:
        waits = np.asarray(self.waits, dtype=np.float64)
        return {
            "reviewer_rate": self.rate,
            "human_answers": self.answers,
            "auto_labeled_while_waiting": self.taken_over,
            "auto_while_waiting_precision": round(self.taken_over_correct / self.taken_over, 4)
            if self.taken_over else None,
            "max_queue_depth": self.max_depth,
            "wait_mean_items": round(float(waits.mean()), 1) if waits.size else 0.0,
            "wait_p90_items": round(float(np.quantile(waits, 0.9)), 1) if waits.size else 0.0,
            "queue_left_at_end_of_stream": left_at_end,
            "drain_items_after_stream": drain,  # stream time the reviewers needed after the end (None: not drained)
            "drain_share_of_stream": None if drain is None or not stream else round(drain / stream, 4),
            "queue_left": left,
        }
