"""How new human answers reach a worker's learner: a wake-up call and a cursor over the store.

The API may run in another process than the worker, so the store is the channel: the worker polls it for
human labels it has not seen (:class:`AnswerFeed`). When both run in one process, the API also calls
:meth:`FeedbackSink.notify` so the worker wakes at once instead of at its next poll.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable
from datetime import timedelta
from typing import Protocol, runtime_checkable

from agent.ports import GroundTruth
from service.store import FedAnswer, SqlStore
from service.store.tables import utcnow


@runtime_checkable
class FeedbackSink(Protocol):
    """Told that a project has news (items ingested, answers submitted, a policy activated).

    Must be cheap, thread-safe and never raise: the API calls it on the request path."""

    def notify(self, project: str) -> None: ...


class NullSink:
    """A sink for processes without an in-process worker: the workers find the news by polling."""

    def notify(self, project: str) -> None:
        return None


class AnswerFeed:
    """Settled human answers of one project, each delivered once, including ones committed out of id order.

    Transactions take label ids when they insert and may commit in another order, so the feed re-reads ids
    above a *floor*: the largest id it had seen ``lag_seconds`` ago. Any answer not yet visible then belongs
    to a transaction that started after that (submits are shorter than the lag), so its id is above the
    floor. Ids above the floor that were already delivered are remembered and skipped.
    """

    def __init__(self, store: SqlStore, project: str, *, lag_seconds: float,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.store = store
        self.project = project
        self.lag = lag_seconds
        self.clock = clock
        self.floor = 0
        self._seen: set[int] = set()
        self._marks: deque[tuple[float, int]] = deque()  # (poll time, largest id seen by then)
        self._top = 0
        self.delivered = 0

    def start(self) -> list[GroundTruth]:
        """Every answer so far (the latest per item, oldest first), for ``Learner.load``; sets the cursor."""
        # Answers created before now - 2 * lag were committed by now - lag: their ids are below any answer
        # still in flight, so the largest of them is a safe floor.
        floor = self.store.learning.human_label_floor(self.project, utcnow() - timedelta(seconds=2 * self.lag))
        answers, top = self.store.learning.load_ground_truth_since(self.project, 0)
        self.floor, self._top = floor, top
        self._seen = {a.id for a in answers if a.id > floor}
        self._marks.clear()
        self._marks.append((self.clock(), top))
        self.delivered = len(answers)
        latest: dict[str, FedAnswer] = {}
        for a in answers:  # id order: a later answer for the same item (another policy version) wins
            latest.pop(a.answer.item.key, None)
            latest[a.answer.item.key] = a
        return [a.answer for a in sorted(latest.values(), key=lambda a: a.id)]

    def poll(self) -> list[GroundTruth]:
        """Answers not delivered yet, in id order."""
        now = self.clock()
        ids = self.store.learning.human_label_ids_since(self.project, self.floor)
        fresh = [i for i in ids if i not in self._seen]
        answers = self.store.learning.load_human_labels(self.project, fresh) if fresh else []
        self._seen.update(a.id for a in answers)
        if ids:
            self._top = max(self._top, ids[-1])
        self._marks.append((now, self._top))
        while len(self._marks) > 1 and self._marks[1][0] <= now - self.lag:
            self._marks.popleft()
        if self._marks[0][0] <= now - self.lag and self._marks[0][1] > self.floor:
            self.floor = self._marks[0][1]
            self._seen = {i for i in self._seen if i > self.floor}
        self.delivered += len(answers)
        return [a.answer for a in answers]
