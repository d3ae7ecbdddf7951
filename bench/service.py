"""Service benchmark: HTTP ingest-to-labeled throughput, review claim+submit latency, peak memory.

``python -m bench service [--data DIR] [--skip-postgres] [--reviewers 50]``; writes the ``service`` section of
``docs/BENCHMARKS.md``. Everything runs on 127.0.0.1: for each database (a fresh SQLite file; a fresh schema in
the PostgreSQL at ``LABELAGENT_TEST_POSTGRES_URL``), migrated with Alembic (what ``labelagent db upgrade`` does),
it starts ``labelagent serve --no-worker`` (the API alone) and ``labelagent worker`` processes
(:mod:`service.liveserver`), and drives them over HTTP with httpx from this process, as clients would.

1. **Warm-up** (not timed): the first ``WARM_ITEMS`` items of the shuffled sms_spam stream, ingested a window at a
   time while an oracle (``ORACLE_REVIEWERS`` reviewer clients answering from the dataset through the review
   routes) clears the queue: the cold start, after which the agent auto-labels.
2. **Timed, 1 worker then 2**: the next items, split in two equal parts. For each part the clock starts at the
   first ``POST /projects/{p}/items`` (1,000 items per call, sent back to back) and the database is polled
   every 10 ms: *decided* is when no item of the part is pending or leased any more (each is auto-labeled or
   waiting in the review queue: the agent's pace), *labeled* when every item has its label (the oracle answered
   the escalations and audits meanwhile). The second worker starts between the parts and loads the project's
   ground truth from the store (warm) before its part is sent.
3. **Review latency**: a project whose policy never auto-labels (``min_calibration`` out of reach) gets
   ``REVIEW_TASKS`` items; once the worker has queued them all, ``--reviewers`` concurrent clients (one API key
   each) claim and submit: first with a think time between claim and submit (``THINK``, for ``THINK_SECONDS``),
   then closed loop until the queue is empty (the API's saturation). Per task: the claim request's and the submit
   request's wall times on the client, and their sum; and the CPU time the API process, the worker and this
   process (the clients) used meanwhile, per answer.
4. **Peak RSS** of each process (``VmHWM``) just before it is stopped.

Only what runs: with PostgreSQL unreachable, its rows are left out and the report says so.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import sqlite3
import ssl
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, func, select, text
from sqlalchemy.engine import make_url

from bench import BENCHMARKS, ROOT, write_section
from bench.service_report import ReviewStats, Setup, latency_figures, render
from policies import Policy, example_policy
from service.datasets import LabeledItem, load_csv
from service.db import make_engine
from service.liveserver import LiveService, WorkerProcess
from service.migrate import upgrade
from service.replay import shuffled
from service.serve import tune_gc
from service.store import SqlStore
from service.store.base import item_t, label_t

DEFAULT_DATA = Path(os.environ.get("LABELAGENT_DATA", ROOT.parent / "shared" / "data"))
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
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
    name: str
    url: str
    version: str
    cleanup: Callable[[], None] = lambda: None


@contextmanager
def sqlite_database(folder: Path) -> Iterator[Database]:
    yield Database("SQLite", f"sqlite:///{folder / 'bench.db'}", f"SQLite {sqlite3.sqlite_version} (WAL)")


@contextmanager
def postgres_database(url: str) -> Iterator[Database]:
    """A fresh schema, dropped afterwards (the same isolation as the tests')."""
    admin = create_engine(url, isolation_level="AUTOCOMMIT", connect_args={"connect_timeout": 3})
    schema = f"bench_{uuid.uuid4().hex[:12]}"
    try:
        with admin.connect() as conn:
            version = str(conn.execute(text("SHOW server_version")).scalar_one()).split()[0]
            conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        scoped = make_url(url).update_query_dict({"options": f"-csearch_path={schema}"})
        yield Database("PostgreSQL", scoped.render_as_string(hide_password=False), f"PostgreSQL {version}")
    finally:
        try:
            with admin.connect() as conn:
                conn.execute(text(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE'))
        finally:
            admin.dispose()


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
        self.operator, _ = self.store.create_key(name="bench operator", role="operator")
        self.reviewer_keys = [self.store.create_key(name=f"bench reviewer {i}", role="reviewer")[0]
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
        return self.store.count_items(project)

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
        before = self.store.count_labels(project)
        total = sum(self.counts(project).values()) + len(rows)

        async def body() -> dict[str, float]:
            async with self.client(self.operator) as http:
                t0 = time.perf_counter()
                await self.ingest(http, project, rows)
                t_ingest = time.perf_counter()

            def decided() -> bool:
                c = self.counts(project)
                return c["pending"] + c["leased"] == 0

            t_decided = await self.wait_for(decided, "every item decided")
            t_labeled = await self.wait_for(lambda: self.counts(project)["labeled"] == total, "every item labeled")
            return {"ingest": t_ingest - t0, "decided": t_decided - t0, "labeled": t_labeled - t0}

        times, _ = await self.with_oracle(project, body)
        after = self.store.count_labels(project)
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
        pid = self.store.get_project(project).id
        with self.engine.connect() as conn:
            per_item = (select(item_t.c.id, func.count(label_t.c.id).label("n"))
                        .select_from(item_t.outerjoin(label_t, label_t.c.item_id == item_t.c.id))
                        .where(item_t.c.project_id == pid).group_by(item_t.c.id).subquery())
            bad = conn.execute(select(func.count()).select_from(per_item).where(per_item.c.n != 1)).scalar_one()
        return bad == 0


async def run_database(db: Database, rows: Sequence[LabeledItem], logs: Path, reviewers: int,
                       latency_only: bool = False, think_seconds: float = THINK_SECONDS, closed_loop: bool = True
                       ) -> tuple[list[dict[str, Any]], list[dict[str, Any]], dict[str, int | None], list[str]]:
    """Throughput with 1 and 2 workers, review latency, peak RSS, and the checks, on one database (the latency
    part alone with ``latency_only``)."""
    print(f"service: {db.name} ({db.version})", flush=True)
    bench = Bench(db, rows, logs, reviewers)
    checks: list[str] = []
    try:
        bench.api.start()
        w1 = bench.start_worker()
        stream = shuffled(rows, 0, None)
        if latency_only:
            latency = await review_latency(bench, w1, stream, think_seconds, closed_loop)
            return [], latency, bench.rss, checks
        warm, rest = stream[:WARM_ITEMS], stream[WARM_ITEMS:]
        half = len(rest) // 2
        project = "bench-throughput"
        await bench.create_project(project, example_policy("sms_spam"))
        await bench.wait_for(lambda: w1.serving(project), "worker 1 serving the project")
        t = time.perf_counter()
        await bench.warm_up(project, warm)
        print(f"  warm-up: {len(warm)} items in {time.perf_counter() - t:.1f}s", flush=True)
        results = [await bench.timed(project, rest[:half], 1)]
        print(f"  1 worker: {results[-1]['decided_rate']:.0f} items/s decided, "
              f"{results[-1]['labeled_rate']:.0f} items/s labeled", flush=True)
        w2 = bench.start_worker()
        await bench.wait_for(lambda: w2.serving(project), "worker 2 serving the project (warm)")
        results.append(await bench.timed(project, rest[half:], 2))
        print(f"  2 workers: {results[-1]['decided_rate']:.0f} items/s decided, "
              f"{results[-1]['labeled_rate']:.0f} items/s labeled", flush=True)
        once = bench.labeled_once(project)
        checks.append(f"{db.name}: {len(rows)} items, each labeled exactly once: {'yes' if once else 'NO'}")
        bench.rss["worker 2"] = w2.peak_rss()
        w2.stop()  # the latency phase runs with the API and one worker
        latency = await review_latency(bench, w1, stream, think_seconds, closed_loop)
        return results, latency, bench.rss, checks
    finally:
        bench.stop_all()


async def review_latency(bench: Bench, worker: WorkerProcess, stream: Sequence[LabeledItem], think_seconds: float,
                         closed_loop: bool) -> list[dict[str, Any]]:
    review = "bench-review"
    never_auto = example_policy("sms_spam").model_copy(update={"min_calibration": 10**9})
    await bench.create_project(review, never_auto)
    await bench.wait_for(lambda: worker.serving(review), "worker 1 serving the review project")
    latency = await bench.latency(review, stream[:REVIEW_TASKS], think_seconds, closed_loop)
    for r in latency:
        print(f"  review ({'think time' if r['think'] else 'closed loop'}): {r['answers_per_s']:.0f} answers/s, "
              f"claim p50 {r['claim_p50']:.1f} / p99 {r['claim_p99']:.1f} ms, submit p50 {r['submit_p50']:.1f} / "
              f"p99 {r['submit_p99']:.1f} ms, claim+submit p50 {r['pair_p50']:.1f} ms, p99 {r['pair_p99']:.1f} ms "
              f"({r['tasks']} tasks, {r['conflicts']} conflicts); CPU per answer {_ms(r['cpu_api'])} API, "
              f"{_ms(r['cpu_workers'])} worker, {_ms(r['cpu_client'])} clients; load {os.getloadavg()[0]:.1f}",
              flush=True)
    return latency


def _ms(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f} ms"


async def _run(args: argparse.Namespace) -> int:
    data = args.data / "sms_spam.csv"
    if not data.exists():
        print(f"service: {data} is missing; the service benchmark needs sms_spam.csv (text,label)", flush=True)
        return 2
    rows = load_csv(data)
    tune_gc()  # as the API does: the clients' timings must not include full collections over the imported libraries
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    throughput: list[dict[str, Any]] = []
    latency: list[dict[str, Any]] = []
    rss: dict[str, dict[str, int | None]] = {}
    versions: list[str] = []
    checks: list[str] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory(prefix="labelagent-bench-service-") as tmp:
        backends: list[tuple[str, Any]] = []
        if not args.skip_sqlite:
            backends.append(("sqlite", lambda: sqlite_database(Path(tmp))))
        if not args.skip_postgres:
            backends.append(("postgres", lambda: postgres_database(args.postgres_url)))
        for name, make in backends:
            logs = Path(tmp) / name
            try:
                with make() as db:
                    versions.append(db.version)
                    results, lat, mem, ok = await run_database(db, rows, logs, args.reviewers, args.latency_only,
                                                               args.think_seconds, not args.no_closed_loop)
            except Exception as exc:
                if name == "postgres" and "connect" in repr(exc).lower():
                    notes.append(f"PostgreSQL skipped: {type(exc).__name__} connecting to "
                                 f"{make_url(args.postgres_url).render_as_string(hide_password=True)}")
                    print(f"service: {notes[-1]}", flush=True)
                    continue
                for log in sorted(logs.glob("*.log")):  # the processes' own lines (not the access log)
                    lines = [x for x in log.read_text(errors="replace").splitlines() if '" 20' not in x]
                    print(f"--- {log.name}\n" + "\n".join(lines[-20:]))
                raise
            throughput += results
            latency += lat
            rss[db.name] = mem
            checks += ok
    notes.append(f"Load average (1 min) before the run: {load_before:.1f} on {os.cpu_count()} CPUs (other work on the "
                 f"machine); the benchmark's own processes raise it during the run ({os.getloadavg()[0]:.1f} at the "
                 "end). The timed parts last about a second or two each (the dataset's 5,574 items), so expect "
                 "run-to-run differences of tens of percent.")
    if args.latency_only:  # a partial run: figures on stdout, the report untouched
        print(f"service: latency only, {time.perf_counter() - started:.0f} s; load average now "
              f"{os.getloadavg()[0]:.1f} (before: {load_before:.1f})", flush=True)
        return 0
    setup = Setup(WARM_ITEMS, WARM_WINDOW, INGEST_CALL, ORACLE_REVIEWERS, REVIEW_TASKS, args.reviewers, THINK,
                  THINK_SECONDS)
    body = render(setup, throughput, latency, rss, versions, checks, notes, time.perf_counter() - started)
    if args.no_write:
        print(body)
    else:
        write_section("service", body, args.output)
        print(f"service: wrote the service section of {args.output}", flush=True)
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench service", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with sms_spam.csv")
    parser.add_argument("--postgres-url", default=os.environ.get("LABELAGENT_TEST_POSTGRES_URL", DEFAULT_PG),
                        help="PostgreSQL to use (a fresh schema is created and dropped)")
    parser.add_argument("--skip-postgres", action="store_true", help="SQLite only")
    parser.add_argument("--skip-sqlite", action="store_true", help="PostgreSQL only")
    parser.add_argument("--latency-only", action="store_true",
                        help="only the review latency part (figures printed; the report is not written)")
    parser.add_argument("--think-seconds", type=float, default=THINK_SECONDS,
                        help="how long the think-time latency measurement runs")
    parser.add_argument("--no-closed-loop", action="store_true",
                        help="skip the closed-loop (saturation) latency measurement")
    parser.add_argument("--reviewers", type=int, default=50, help="concurrent reviewer clients (latency)")
    parser.add_argument("--output", type=Path, default=BENCHMARKS, help="the Markdown file to update")
    parser.add_argument("--no-write", action="store_true", help="print the section instead of writing it")
    args = parser.parse_args(argv)
    return asyncio.run(_run(args))
