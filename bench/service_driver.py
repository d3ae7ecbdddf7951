"""The service benchmark's driver (:mod:`bench.service` runs it): for one database, the API and worker processes,
and the HTTP clients that ingest items and answer reviews as people would; the benchmark's phases and their
parameters."""

from __future__ import annotations

import asyncio
import random
import ssl
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import func, select

from bench.service_report import ReviewStats, latency_figures
from policies import Policy
from service.offline.datasets import LabeledItem
from service.offline.liveserver import LiveService, WorkerProcess
from service.store import SqlStore
from service.store.base import item_t, label_t
from service.store.db import make_engine
from service.store.migrate import upgrade

WARM_ITEMS = 1000
WARM_WINDOW = 100
INGEST_CALL = 1000  # the API's max_batch_items
ORACLE_REVIEWERS = 4
REVIEW_TASKS = 1500
THINK = (1.0, 3.0)  # seconds between a claim and its answer (a person reading the item)
THINK_SECONDS = 20.0
POLL = 0.01
PHASE_TIMEOUT = 120.0


@dataclass
class Database:
    """A database the benchmark runs on: its name in the report, its URL, its version."""

    name: str
    url: str
    version: str
    cleanup: Callable[[], None] = lambda: None


class Bench:
    """One database: the API process, the worker processes, the clients."""

    def __init__(self, db: Database, rows: Sequence[LabeledItem], logs: Path, reviewers: int) -> None:
        self.db = db
        self.rows = list(rows)
        self.truth = {r.item.key: r.label for r in rows}
        self.logs = logs
        self.reviewers = reviewers
        self.tls = ssl.create_default_context()  # shared by the clients (see ``client``)
        self.engine = make_engine(db.url)
        upgrade(self.engine)  # `labelagent db upgrade`
        self.store = SqlStore(self.engine)
        self.operator, _ = self.store.projects.create_key(name="bench operator", role="operator")
        self.reviewer_keys = [self.store.projects.create_key(name=f"bench reviewer {i}", role="reviewer")[0]
                              for i in range(max(reviewers, ORACLE_REVIEWERS))]
        self.api = LiveService(db.url, log=logs / "api.log", workers=0)
        self.workers: list[WorkerProcess] = []
        self.rss: dict[str, int | None] = {}

    # --- processes ----------------------------------------------------------------------------------------------

    def start_worker(self) -> WorkerProcess:
        n = len(self.workers) + 1
        worker = WorkerProcess(self.db.url, name=f"bench-w{n}", log=self.logs / f"worker{n}.log").start()
        self.workers.append(worker)
        return worker

    def stop_all(self) -> None:
        for w in self.workers:
            self.rss.setdefault(f"worker {w.name[-1]}", w.peak_rss())
            w.stop()
        self.rss.setdefault("api", self.api.peak_rss())
        self.api.stop()
        self.engine.dispose()

    def cpu(self) -> dict[str, float | None]:
        """CPU seconds used so far by the API process, the live workers (together) and this process (the clients)."""
        workers = [w.cpu_seconds() for w in self.workers if w.alive()]
        return {"api": self.api.cpu_seconds(), "client": time.process_time(),
                "workers": None if None in workers else sum(w for w in workers if w is not None)}

    def client(self, key: str) -> httpx.AsyncClient:
        # One TLS context for every client: httpx builds a new one per client otherwise (~25 ms of CPU, which blocked
        # the clients' event loop while 50 reviewers started and was counted as the latency of claims in flight).
        return httpx.AsyncClient(base_url=self.api.url, headers={"X-API-Key": key}, timeout=60.0, verify=self.tls)

    async def wait_for(self, predicate: Callable[[], bool], what: str, timeout: float = PHASE_TIMEOUT) -> float:
        """Poll ``predicate`` (in a thread: it reads the database) every 10 ms; the time it first held."""
        deadline = time.monotonic() + timeout
        while not await asyncio.to_thread(predicate):
            if time.monotonic() > deadline:
                raise RuntimeError(f"{self.db.name}: timed out after {timeout:.0f}s waiting for {what}")
            await asyncio.sleep(POLL)
        return time.perf_counter()

    # --- clients ------------------------------------------------------------------------------------------------

    async def create_project(self, name: str, policy: Policy) -> None:
        async with self.client(self.operator) as http:
            data = policy.model_dump(mode="json") | {"project": name, "version": 1}
            r = await http.post("/projects", json={"name": name, "policy": data})
            r.raise_for_status()

    async def ingest(self, http: httpx.AsyncClient, project: str, rows: Sequence[LabeledItem]) -> None:
        for start in range(0, len(rows), INGEST_CALL):
            body = {"items": [{"external_id": r.item.key, "data": {"text": r.item.text}}
                              for r in rows[start:start + INGEST_CALL]]}
            (await http.post(f"/projects/{project}/items", json=body)).raise_for_status()

    async def review(self, key: str, name: str, project: str, stats: ReviewStats, stop: asyncio.Event | None,
                     think: tuple[float, float] | None = None, seed: int = 0) -> None:
        """Claim and answer from the dataset, until the queue is empty (``stop`` None) or ``stop`` is set. With
        ``think`` (seconds, low and high), the answer is sent a uniform random time after the claim, as a person
        reading the item would; the latencies never include it."""
        idle = 0.01
        rng = random.Random(seed)
        async with self.client(key) as http:
            if think is not None:  # people do not start in lockstep either
                await asyncio.sleep(rng.uniform(0, think[1]))
            while stop is None or not stop.is_set():
                t0 = time.perf_counter()
                r = await http.post(f"/projects/{project}/reviews/claim", json={"reviewer": name})
                claimed = time.perf_counter() - t0
                if r.status_code == 204:
                    if stop is None:
                        return
                    try:
                        await asyncio.wait_for(stop.wait(), idle)
                    except TimeoutError:
                        idle = min(2 * idle, 0.1)
                    continue
                r.raise_for_status()
                idle = 0.01
                task = r.json()
                if think is not None:
                    await asyncio.sleep(rng.uniform(*think))  # the reviewer reads the item
                t1 = time.perf_counter()
                s = await http.post(f"/reviews/{task['task_id']}/submit",
                                    json={"lease_token": task["lease_token"],
                                          "label": self.truth[task["item"]["external_id"]]})
                submitted = time.perf_counter() - t1
                if s.status_code == 409:
                    stats.conflicts += 1
                    continue
                s.raise_for_status()
                stats.claim.append(claimed)
                stats.submit.append(submitted)
                stats.pair.append(claimed + submitted)
                stats.answered += 1

    async def with_oracle(self, project: str, body: Callable[[], Any]) -> tuple[Any, ReviewStats]:
        stats, stop = ReviewStats(), asyncio.Event()
        tasks = [asyncio.create_task(self.review(self.reviewer_keys[i], f"oracle-{i}", project, stats, stop))
                 for i in range(ORACLE_REVIEWERS)]
        try:
            result = await body()
        finally:
            stop.set()
            done = await asyncio.gather(*tasks, return_exceptions=True)
        errors = [e for e in done if isinstance(e, BaseException)]
        if errors:
            raise errors[0]
        return result, stats

    # --- phases -------------------------------------------------------------------------------------------------

    def counts(self, project: str) -> dict[str, int]:
        return self.store.items.count_items(project)

    def decided(self, project: str) -> bool:
        """No item of ``project`` is pending or leased: each is labeled or waits for review."""
        c = self.counts(project)
        return c["pending"] + c["leased"] == 0

    async def warm_up(self, project: str, rows: Sequence[LabeledItem]) -> None:
        async def body() -> None:
            async with self.client(self.operator) as http:
                for start in range(0, len(rows), WARM_WINDOW):
                    await self.ingest(http, project, rows[start:start + WARM_WINDOW])
                    done = min(start + WARM_WINDOW, len(rows))
                    await self.wait_for(lambda done=done: self.counts(project)["labeled"] >= done,  # type: ignore[misc]
                                        f"warm-up item {done} labeled")

        await self.with_oracle(project, body)

    async def timed(self, project: str, rows: Sequence[LabeledItem], workers: int) -> dict[str, Any]:
        before = self.store.learning.count_labels(project)
        total = sum(self.counts(project).values()) + len(rows)

        async def body() -> dict[str, float]:
            async with self.client(self.operator) as http:
                t0 = time.perf_counter()
                await self.ingest(http, project, rows)
                t_ingest = time.perf_counter()

            t_decided = await self.wait_for(lambda: self.decided(project), "every item decided")
            t_labeled = await self.wait_for(lambda: self.counts(project)["labeled"] == total, "every item labeled")
            return {"ingest": t_ingest - t0, "decided": t_decided - t0, "labeled": t_labeled - t0}

        times, _ = await self.with_oracle(project, body)
        after = self.store.learning.count_labels(project)
        auto = after["agent"] - before["agent"]
        n = len(rows)
        return {"database": self.db.name, "workers": workers, "items": n, **times,
                "decided_rate": n / times["decided"], "labeled_rate": n / times["labeled"],
                "auto_rate": auto / n, "human": after["human"] - before["human"]}

    async def latency(self, project: str, rows: Sequence[LabeledItem], think_seconds: float,
                      closed_loop: bool = True) -> list[dict[str, Any]]:
        """Queue ``rows`` for review; ``reviewers`` clients answer with think time for ``think_seconds``, then
        without any until the queue is empty (unless not ``closed_loop``)."""
        async with self.client(self.operator) as http:
            await self.ingest(http, project, rows)
        await self.wait_for(lambda: self.counts(project)["in_review"] == len(rows), "every review task queued")
        out = []
        for think in (THINK, None) if closed_loop else (THINK,):
            stats, stop = ReviewStats(), (asyncio.Event() if think else None)
            cpu0 = self.cpu()
            t0 = time.perf_counter()
            runs = asyncio.gather(*(self.review(self.reviewer_keys[i], f"reviewer-{i}", project, stats, stop,
                                                think, seed=i) for i in range(self.reviewers)))
            if stop is not None:
                await asyncio.sleep(think_seconds)  # the measurement's duration
                stop.set()
            await runs
            stats.cpu = {k: v - cpu0[k] for k, v in self.cpu().items() if v is not None and cpu0.get(k) is not None}
            out.append(latency_figures(self.db.name, self.reviewers, think, stats, time.perf_counter() - t0))
        labeled = self.counts(project)["labeled"]
        if closed_loop and labeled != len(rows):
            raise RuntimeError(f"{self.db.name}: {labeled} of {len(rows)} review items labeled")
        return out

    def labeled_once(self, project: str) -> bool:
        """Every item of the project has exactly one label (one policy version here)."""
        pid = self.store.projects.get_project(project).id
        with self.engine.connect() as conn:
            per_item = (select(item_t.c.id, func.count(label_t.c.id).label("n"))
                        .select_from(item_t.outerjoin(label_t, label_t.c.item_id == item_t.c.id))
                        .where(item_t.c.project_id == pid).group_by(item_t.c.id).subquery())
            bad = conn.execute(select(func.count()).select_from(per_item).where(per_item.c.n != 1)).scalar_one()
        return bad == 0
