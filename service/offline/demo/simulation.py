"""The demo's simulation, two kinds of plain HTTP clients of the running API (threads of the demo's process):

* the **stream**: the shipped rows in order, ``chunk`` items per ``POST /projects/{p}/items`` every
  ``chunk / rate`` seconds, from the position the database says (the project's item count);
* the **simulated reviewers** (``simulated-reviewer-1`` ... ``-N``): each claims the next task
  (``POST /projects/{p}/reviews/claim``), holds it ``review_delay`` seconds as a reader would, and submits the
  dataset's label (``POST /reviews/{task}/submit``). A task whose item is not from the dataset (a person sent it)
  is skipped for them. While paused they claim nothing and give back what they hold (``/release``).

Both wait on the simulation's stop event between requests, so stopping is immediate.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import httpx

from policies import InputError
from service.offline.demo.control import SIMULATED_REVIEWER, DemoSnapshot
from service.offline.demo.dataset import ATTRIBUTION, DemoRow

log = logging.getLogger("labelagent.demo")

IDLE_CLAIM_SECONDS = 0.5  # between claims while the queue is empty
RETRY_SECONDS = 1.0  # after the server did not answer


@dataclass(frozen=True, slots=True)
class DemoOptions:
    project: str = "sms_spam"
    rate: float = 5.0  # items streamed per second
    reviewers: int = 4  # simulated reviewers working at once
    review_delay: float = 1.0  # seconds a simulated reviewer holds a task before answering

    def __post_init__(self) -> None:
        if not 0 < self.rate <= 1000:
            raise InputError(f"--rate is {self.rate}; give items per second above 0 and at most 1000")
        if not 1 <= self.reviewers <= 32:
            raise InputError(f"--reviewers is {self.reviewers}; give 1 to 32 simulated reviewers")
        if not 0 <= self.review_delay <= 3600:
            raise InputError(f"--review-delay is {self.review_delay}; give 0 to 3600 seconds")


class Simulation:
    """The stream and the simulated reviewers; a :class:`~service.offline.demo.control.DemoControl` for the API."""

    def __init__(self, rows: Sequence[DemoRow], options: DemoOptions, *, ingest_key: str, reviewer_key: str,
                 position: int) -> None:
        self.rows = list(rows)
        self.options = options
        self._truth = {r.key: r.label for r in rows}
        self._keys = {"ingest": ingest_key, "reviewer": reviewer_key}
        self._position = min(position, len(self.rows))
        self._stop = threading.Event()
        self._active = threading.Event()  # set while the simulated reviewers answer
        self._active.set()
        self._threads: list[threading.Thread] = []
        self.answered = 0  # by this run's simulated reviewers
        self._lock = threading.Lock()

    @property
    def project(self) -> str:
        return self.options.project

    def snapshot(self) -> DemoSnapshot:
        o = self.options
        return DemoSnapshot(project=o.project, dataset=ATTRIBUTION, position=self._position, total=len(self.rows),
                            rate_per_second=o.rate, reviewer=SIMULATED_REVIEWER,
                            reviewer_paused=not self._active.is_set(), review_delay_seconds=o.review_delay)

    def set_reviewer_paused(self, paused: bool) -> None:
        if paused:
            self._active.clear()
        else:
            self._active.set()

    def start(self, url: str) -> None:
        self._threads = [threading.Thread(target=self._stream, args=(url,), name="demo-stream", daemon=True)]
        self._threads += [threading.Thread(target=self._review, args=(url, f"{SIMULATED_REVIEWER}-{i + 1}"),
                                           name=f"demo-reviewer-{i + 1}", daemon=True)
                          for i in range(self.options.reviewers)]
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 15.0) -> None:
        self._stop.set()
        self._active.set()  # wake paused reviewers so they see the stop
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def _client(self, url: str, role: str) -> httpx.Client:
        return httpx.Client(base_url=url, headers={"X-API-Key": self._keys[role]}, timeout=30.0)

    # --- the stream --------------------------------------------------------------------------------------------

    def _stream(self, url: str) -> None:
        chunk = max(1, math.ceil(self.options.rate / 2))  # about two calls a second
        interval = chunk / self.options.rate
        path = f"/projects/{self.project}/items"
        with self._client(url, "ingest") as client:
            next_at = time.monotonic()
            while not self._stop.is_set() and self._position < len(self.rows):
                rows = self.rows[self._position:self._position + chunk]
                body = {"items": [{"external_id": r.key, "data": {"text": r.text}} for r in rows]}
                wait = self._send(client, path, body)
                if wait is None:
                    self._position += len(rows)
                    next_at = max(next_at + interval, time.monotonic() - interval)  # no burst after a stall
                    wait = next_at - time.monotonic()
                self._stop.wait(max(0.0, wait))
        if self._position >= len(self.rows):
            log.info("demo stream: all %d rows sent", len(self.rows))

    def _send(self, client: httpx.Client, path: str, body: dict[str, Any]) -> float | None:
        """POST an ingest call; None when stored, else how long to wait before trying again."""
        try:
            r = client.post(path, json=body)
        except httpx.HTTPError as exc:
            log.warning("demo stream: %s did not answer (%s); retrying", path, exc)
            return RETRY_SECONDS
        if r.status_code == 429:
            return float(r.headers.get("Retry-After", RETRY_SECONDS))
        if r.is_success:
            return None
        log.error("demo stream: %s answered %d: %s; retrying", path, r.status_code, r.text[:300])
        return 5 * RETRY_SECONDS

    # --- the simulated reviewers -------------------------------------------------------------------------------

    def _review(self, url: str, name: str) -> None:
        claim = f"/projects/{self.project}/reviews/claim"
        with self._client(url, "reviewer") as client:
            while not self._stop.is_set():
                if not self._active.wait(IDLE_CLAIM_SECONDS) or self._stop.is_set():
                    continue
                try:
                    r = client.post(claim, json={"reviewer": name})
                    if r.status_code == 200:
                        self._answer(client, r.json())
                        continue
                    if r.status_code != 204:
                        log.error("%s: claim answered %d: %s", name, r.status_code, r.text[:300])
                except httpx.HTTPError as exc:
                    log.warning("%s: the API did not answer (%s)", name, exc)
                self._stop.wait(IDLE_CLAIM_SECONDS)

    def _answer(self, client: httpx.Client, task: dict[str, Any]) -> None:
        """Hold the task ``review_delay`` seconds, then submit the dataset's label (or skip an item from elsewhere,
        or give it back when the simulation stopped or was paused meanwhile)."""
        task_id, token = task["task_id"], task["lease_token"]
        label = self._truth.get(task["item"]["external_id"])
        if label is None or label not in task["labels"]:
            client.post(f"/reviews/{task_id}/skip", json={"lease_token": token})
            return
        if self._stop.wait(self.options.review_delay) or not self._active.is_set():
            client.post(f"/reviews/{task_id}/release", json={"lease_token": token})
            return
        r = client.post(f"/reviews/{task_id}/submit", json={"lease_token": token, "label": label})
        if r.is_success:
            with self._lock:
                self.answered += 1
        else:  # a lease taken over after expiry (409), a policy changed meanwhile (422): the next task
            log.info("submit of task %d answered %d: %s", task_id, r.status_code, r.text[:200])
