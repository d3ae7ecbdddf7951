"""``labelagent replay DATASET --url http://HOST:PORT``: the replay of :mod:`service.offline.replay`, through a running
service's HTTP API, so the whole service path (HTTP, store, workers, feedback) is measured the same way.

The stream is the in-process replay's (:func:`service.offline.replay.shuffled`: same seed, same order, same limit):

* a fresh project is created with the policy (``POST /projects``; its name defaults to
  ``<policy project>-replay-<random>``, since the service may already hold the policy's project);
* items are ingested in batches (``POST /projects/{p}/items``). At most ``window`` items are in flight (ingested,
  not yet labeled): the default, one batch, is the in-process replay's lockstep (a batch is labeled and its
  reviews answered before the next arrives); a larger window streams;
* oracle reviewers (``reviewers`` async clients, distinct names so overlap > 1 can be met) claim and submit
  through the review routes with the dataset's labels, until every item is labeled;
* every request carries the operator API key (``--api-key``, else ``$LABELAGENT_KEY``); a 429 of the key's rate
  limit is waited out as ``Retry-After`` says (counted in ``rate_limited``: a server started with
  ``LABELAGENT_RATE_LIMIT_PER_SECOND=0`` measures the service rather than the limit);
* progress is read from ``GET /projects/{p}/metrics`` (items labeled or failed); the labels are read from the
  export (``GET /projects/{p}/labels``, once the project is quiet, so the cursor walk is exact) and scored
  against the dataset.

``agent_accuracy`` (the agent's own label on every item) takes the agent's suggestions from the operators' queue
listing (``GET /projects/{p}/reviews``), where audits show theirs too. Beyond the in-process keys:
``decided_seconds`` (until the agent had decided every item, auto label or review task, as first seen by the
progress polls: the agent's pace without the humans'), the oracle's review figures (submits, 409s, claim+submit
latency), 429s waited out, and the realized precision from audits.

What the API cannot give: the aggregator's tool weights and fit metrics, and the number of retrains (workers
keep them in memory); those keys are ``None`` and listed under ``unavailable``. Tool calls are counted from each
item's evidence (``GET /projects/{p}/items/{id}``, one request per item; ``evidence=False`` skips it); the
threshold is the one recorded with the latest auto label, model versions the latest of each tool.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import secrets
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import httpx

from agent.calibration import cp_interval
from policies import Policy
from service.offline.datasets import LabeledItem
from service.offline.http_answers import ReplayError
from service.offline.http_answers import check_answer as _check
from service.offline.http_answers import error_text as _error_text
from service.offline.replay import shuffled
from service.offline.reviewers import ORACLE

UNAVAILABLE = ("tool_weights", "aggregator", "retrains")
EXPORT_PAGE = 10_000
EVIDENCE_CONCURRENCY = 16


@dataclass(slots=True)
class HttpReplayConfig:
    url: str
    batch_size: int = 128  # items per ingest call
    seed: int = 0
    limit: int | None = None
    project: str | None = None  # default: <policy project>-replay-<random>
    reviewers: int = 4  # oracle clients (at least the policy's max_overlap)
    window: int | None = None  # items in flight; None: one batch (lockstep); 0: no limit
    timeout: float = 600.0  # seconds for the whole stream to be labeled
    evidence: bool = True  # count tool calls from each item's evidence
    poll_seconds: float = 0.05  # progress polling while waiting
    api_key: str | None = None  # an operator key (creates the project, reads metrics, reviews)


@dataclass(slots=True)
class OracleStats:
    kinds: dict[str, str] = field(default_factory=dict)  # external id -> kind of the task answered
    submits: int = 0
    conflicts: int = 0  # submits refused with 409 (a lease lost): the task comes back to someone
    latencies: list[float] = field(default_factory=list)  # claim + submit seconds per answered task
    rate_limited: int = 0  # 429 answers waited out (any client of the replay)


def replay_project_name(policy: Policy) -> str:
    return f"{policy.project[:48]}-replay-{secrets.token_hex(4)}"


def _data(row: LabeledItem) -> dict[str, Any]:
    """An item's ``data`` for JSON ingest (its image, if any, as base64)."""
    data: dict[str, Any] = {"text": row.item.text, "metadata": row.item.metadata}
    if row.item.image is not None:
        data["image_base64"] = base64.b64encode(row.item.image).decode("ascii")
    return data


class HttpReplay:
    """One replay against one service; use :func:`run_http_replay`."""

    def __init__(self, client: httpx.AsyncClient, rows: Sequence[LabeledItem], policy: Policy,
                 config: HttpReplayConfig, on_batch: Callable[[int], None] | None = None) -> None:
        self.client = client
        self.config = config
        self.stream = shuffled(rows, config.seed, config.limit)
        self.truth = {r.item.key: r.label for r in self.stream}
        self.policy = policy
        self.project = config.project or replay_project_name(policy)
        self.on_batch = on_batch
        self.oracle = OracleStats()
        self.done = asyncio.Event()
        self.settled = 0  # items labeled or failed, per the last metrics read
        self.sent = 0  # items ingested
        self.started = 0.0
        self.decided_after: float | None = None  # seconds until the agent had decided every item (first seen)
        self.metrics: dict[str, Any] = {}
        self.deadline = 0.0

    # --- the service ------------------------------------------------------------------------------------------

    async def send(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        """One request; a 429 (the key's rate limit) is waited out as its Retry-After says, until the deadline."""
        while True:
            response = await self.client.request(method, url, **kwargs)
            if response.status_code != 429:
                return response
            self.oracle.rate_limited += 1
            wait = float(response.headers.get("Retry-After", "1") or 1)
            if self.deadline and time.monotonic() + wait > self.deadline:
                return response
            await asyncio.sleep(wait)

    async def check_health(self) -> None:
        try:
            response = await self.send("GET", "/health")
        except httpx.HTTPError as exc:
            raise ReplayError(f"no labelagent service answers at {self.config.url}: {exc!r}") from None
        if response.status_code != 200:
            raise ReplayError(f"{self.config.url}/health answers {response.status_code}: {_error_text(response)}")

    async def create_project(self) -> None:
        data = self.policy.model_dump(mode="json")
        data.update(project=self.project, version=1)
        response = await self.send("POST", "/projects", json={"name": self.project, "policy": data})
        if response.status_code == 409:
            raise ReplayError(f"project {self.project!r} already exists on {self.config.url}; the replay needs a "
                              "fresh project: pass another --project (or none for a random name)")
        _check(response, f"creating project {self.project!r}")

    async def read_metrics(self) -> dict[str, Any]:
        response = _check(await self.send("GET", f"/projects/{self.project}/metrics"), "reading metrics")
        self.metrics = response.json()
        items = self.metrics["items"]
        settled = items.get("labeled", 0) + items.get("failed", 0)
        if self.on_batch is not None and settled > self.settled:
            self.on_batch(settled - self.settled)
        self.settled = settled
        waiting = items.get("pending", 0) + items.get("leased", 0)
        if self.decided_after is None and self.sent == len(self.stream) and waiting == 0:
            self.decided_after = time.perf_counter() - self.started
        return self.metrics

    def _timeout(self, waiting_for: str) -> ReplayError:
        m = self.metrics
        items = m.get("items", {})
        queue = m.get("queue", {})
        return ReplayError(
            f"timed out after {self.config.timeout:g}s waiting for {waiting_for} in project {self.project!r}: "
            f"{items.get('labeled', 0)} labeled, {items.get('pending', 0) + items.get('leased', 0)} pending, "
            f"{items.get('in_review', 0)} in review, {items.get('failed', 0)} failed; review queue depth "
            f"{queue.get('depth', '?')}. Is a worker running against the service's database (`labelagent serve` "
            "runs one; with --no-worker start `labelagent worker`)? Raise --timeout for a slow service.")

    async def wait_settled(self, at_least: int, waiting_for: str) -> None:
        delay = self.config.poll_seconds
        while (await self.read_metrics()) and self.settled < at_least:
            if time.monotonic() > self.deadline:
                raise self._timeout(waiting_for)
            await asyncio.sleep(delay)
            delay = min(delay * 1.5, 0.25)

    # --- the oracle reviewers -----------------------------------------------------------------------------------

    async def review(self, name: str) -> None:
        idle = 0.01
        claim_url = f"/projects/{self.project}/reviews/claim"
        while not self.done.is_set():
            started = time.perf_counter()
            response = await self.send("POST", claim_url, json={"reviewer": name})
            if response.status_code == 204:  # nothing for us now: back off, as a person would
                try:
                    await asyncio.wait_for(self.done.wait(), idle)
                except TimeoutError:
                    idle = min(idle * 2, 0.2)
                continue
            task = _check(response, f"{name} claiming a review task").json()
            idle = 0.01
            key = task["item"]["external_id"]
            label = self.truth.get(key)
            if label is None or label not in task["labels"]:
                raise ReplayError(f"review task {task['task_id']} is for item {key!r}, whose dataset label "
                                  f"{label!r} is not one of {task['labels']}")
            submit = await self.send("POST", f"/reviews/{task['task_id']}/submit",
                                            json={"lease_token": task["lease_token"], "label": label})
            if submit.status_code == 409:
                self.oracle.conflicts += 1
                continue
            _check(submit, f"{name} submitting task {task['task_id']}")
            self.oracle.latencies.append(time.perf_counter() - started)
            self.oracle.submits += 1
            self.oracle.kinds[key] = task["kind"]

    # --- the run ------------------------------------------------------------------------------------------------

    async def ingest(self) -> None:
        size, n = self.config.batch_size, len(self.stream)
        window = size if self.config.window is None else self.config.window
        sent = 0
        for start in range(0, n, size):
            chunk = self.stream[start:start + size]
            if window > 0:
                await self.wait_settled(sent + len(chunk) - max(window, len(chunk)), "the previous batches")
            body = {"items": [{"external_id": r.item.key, "data": _data(r)} for r in chunk]}
            response = _check(await self.send("POST", f"/projects/{self.project}/items", json=body),
                              f"ingesting items {start}..{start + len(chunk) - 1}")
            duplicates = response.json()["duplicates"]
            if duplicates:
                raise ReplayError(f"the service already held {len(duplicates)} of the items (e.g. {duplicates[0]!r}); "
                                  "the replay needs a fresh project")
            sent += len(chunk)
            self.sent = sent

    async def run(self) -> dict[str, Any]:
        await self.check_health()
        await self.create_project()
        reviewers = max(self.config.reviewers, self.policy.max_overlap, 1)
        self.started = started = time.perf_counter()
        self.deadline = time.monotonic() + self.config.timeout
        tasks = [asyncio.create_task(self.review(f"{ORACLE}-{i}"), name=f"{ORACLE}-{i}") for i in range(reviewers)]
        waiting = asyncio.create_task(self._ingest_and_wait())
        try:
            # reviewers run until `done`: one that returns earlier failed, and its error is the replay's
            finished, _ = await asyncio.wait([waiting, *tasks], return_when=asyncio.FIRST_COMPLETED)
            for task in finished:
                task.result()
        finally:
            self.done.set()
            waiting.cancel()
            await asyncio.gather(waiting, *tasks, return_exceptions=True)
        elapsed = time.perf_counter() - started
        labels = await self.export_labels()
        suggestions = await self.read_suggestions()
        tool_calls = await self.count_tool_calls() if self.config.evidence else None
        return self.summarize(labels, suggestions, tool_calls, elapsed)

    async def _ingest_and_wait(self) -> None:
        await self.ingest()
        await self.wait_settled(len(self.stream), "every item to be labeled")

    async def export_labels(self) -> dict[str, list[dict[str, Any]]]:
        """external id -> its label records, from the export (every page)."""
        out: dict[str, list[dict[str, Any]]] = {}
        cursor: str | None = None
        while True:
            params: dict[str, Any] = {"format": "jsonl", "limit": EXPORT_PAGE}
            if cursor:
                params["cursor"] = cursor
            response = _check(await self.send("GET", f"/projects/{self.project}/labels", params=params),
                              "exporting labels")
            lines = [line for line in response.text.splitlines() if line.strip()]
            for line in lines:
                rec = json.loads(line)
                out.setdefault(rec["external_id"], []).append(rec)
            cursor = response.headers.get("X-Next-Cursor")
            if "Link" not in response.headers or not lines:
                return out

    async def read_suggestions(self) -> dict[str, str | None]:
        """external id -> the agent's label on each item it sent to review (the operators' queue listing shows it,
        audits included)."""
        out: dict[str, str | None] = {}
        offset, page = 0, 500
        while True:
            response = _check(await self.send("GET", f"/projects/{self.project}/reviews",
                                              params={"offset": offset, "limit": page}), "listing review tasks")
            body = response.json()
            out.update((t["external_id"], t["suggestion"]) for t in body["tasks"])
            offset += len(body["tasks"])
            if not body["tasks"] or offset >= body["total"]:
                return out

    async def count_tool_calls(self) -> dict[str, int]:
        """Votes recorded per tool across the items (each item's evidence lists the tools that ran on it)."""
        calls: Counter[str] = Counter()
        gate = asyncio.Semaphore(EVIDENCE_CONCURRENCY)

        async def one(key: str) -> None:
            async with gate:
                response = await self.send("GET", f"/projects/{self.project}/items/{quote(key, safe='')}")
            calls.update(v["tool"] for v in _check(response, f"reading item {key!r}").json()["evidence"])

        await asyncio.gather(*(one(key) for key in self.truth))
        return dict(calls)

    def summarize(self, labels: dict[str, list[dict[str, Any]]], suggestions: dict[str, str | None],
                  tool_calls: dict[str, int] | None, elapsed: float) -> dict[str, Any]:
        truth, n = self.truth, len(self.truth)
        final = {key: max(recs, key=lambda r: r["label_id"]) for key, recs in labels.items() if key in truth}
        auto = [(k, r["label"]) for k, r in final.items() if r["source"] == "agent"]
        human = [(k, r["label"]) for k, r in final.items() if r["source"] == "human"]
        auto_ok = sum(1 for k, lab in auto if lab == truth[k])
        final_ok = auto_ok + sum(1 for k, lab in human if lab == truth[k])
        agent_ok = auto_ok + sum(1 for k, lab in suggestions.items() if k in truth and lab == truth[k])
        lo, hi = cp_interval(auto_ok, len(auto))
        m = self.metrics
        versions = {v["tool"]: v["version"] for v in m.get("model_versions", [])}
        latencies = sorted(self.oracle.latencies)
        return {
            "items": n,
            "auto_labeled": len(auto),
            "human_reviews": len(human),
            "human_review_rate": round(len(human) / n, 4) if n else 0.0,
            "audits": sum(1 for kind in self.oracle.kinds.values() if kind == "audit"),
            "auto_precision": round(auto_ok / len(auto), 4) if auto else None,
            "auto_precision_ci": [round(lo, 4), round(hi, 4)],
            "overall_accuracy": round(final_ok / n, 4) if n else None,
            "agent_accuracy": round(agent_ok / n, 4) if n else None,
            "target_precision": self.policy.target_precision,
            "unlabeled": n - len(final),
            "items_per_s": round(n / elapsed, 1) if elapsed > 0 else None,
            "seconds": round(elapsed, 3),
            "decided_seconds": None if self.decided_after is None else round(self.decided_after, 3),
            "tool_calls": tool_calls,
            "tool_weights": None,
            "aggregator": None,
            "threshold": m.get("threshold"),
            "labels": len(self.policy.labels),
            "retrains": None,
            "model_versions": versions,
            "policy": f"{self.project}/{m.get('active_version') or 1}",
            # over HTTP only
            "url": self.config.url,
            "project": self.project,
            "failed": m.get("items", {}).get("failed", 0),
            "labels_per_item_max": max((len(recs) for recs in labels.values()), default=0),
            "audit_precision": m.get("precision"),
            "review_submits": self.oracle.submits,
            "review_conflicts": self.oracle.conflicts,
            "rate_limited": self.oracle.rate_limited,
            "review_latency_ms": {"p50": _percentile_ms(latencies, 0.50), "p99": _percentile_ms(latencies, 0.99)},
            "unavailable": list(UNAVAILABLE),
        }


def _percentile_ms(sorted_values: Sequence[float], q: float) -> float | None:
    if not sorted_values:
        return None
    return round(1000 * sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))], 2)


async def run_http_replay(rows: Sequence[LabeledItem], policy: Policy, config: HttpReplayConfig, *,
                          on_batch: Callable[[int], None] | None = None,
                          transport: httpx.AsyncBaseTransport | None = None) -> dict[str, Any]:
    """Replay ``rows`` through the service at ``config.url``; returns the summary (the in-process keys and more)."""
    if config.batch_size < 1:
        raise ReplayError("batch size must be at least 1")
    limits = httpx.Limits(max_connections=config.reviewers + EVIDENCE_CONCURRENCY + 4)
    headers = {"X-API-Key": config.api_key} if config.api_key else {}
    async with httpx.AsyncClient(base_url=config.url.rstrip("/"), timeout=60.0, limits=limits, headers=headers,
                                 transport=transport) as client:
        try:
            return await HttpReplay(client, rows, policy, config, on_batch).run()
        except httpx.HTTPError as exc:
            raise ReplayError(f"talking to {config.url} failed: {exc!r}") from None


def replay_over_http(args: argparse.Namespace, policy: Policy, rows: Sequence[LabeledItem],
                     on_batch: Callable[[int], None] | None = None) -> dict[str, Any]:
    """``labelagent replay --url``: the CLI's arguments to a summary."""
    config = HttpReplayConfig(url=args.url, batch_size=args.batch_size, seed=args.seed, limit=args.limit,
                              project=args.project, reviewers=args.reviewers, window=args.window,
                              timeout=args.timeout, evidence=not args.skip_evidence,
                              api_key=args.api_key or os.environ.get("LABELAGENT_KEY") or None)
    return asyncio.run(run_http_replay(rows, policy, config, on_batch=on_batch))
