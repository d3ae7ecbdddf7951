"""Service benchmark: HTTP ingest-to-labeled throughput, review claim+submit latency, peak memory.

``python -m bench service [--data DIR] [--skip-postgres] [--reviewers 50]``; writes the ``service`` section of
``docs/BENCHMARKS.md``. Everything runs on 127.0.0.1: for each database (a fresh SQLite file; a fresh schema in
the PostgreSQL at ``LABELAGENT_TEST_POSTGRES_URL``), migrated with Alembic (what ``labelagent db upgrade`` does),
it starts ``labelagent serve --no-worker`` (the API alone) and ``labelagent worker`` processes
(:mod:`service.offline.liveserver`), and drives them over HTTP with httpx from this process, as clients would.

1. **Warm-up** (not timed): the first ``WARM_ITEMS`` items of the shuffled sms_spam stream, ingested a window at a
   time while an oracle (``ORACLE_REVIEWERS`` reviewer clients answering from the dataset through the review
   routes) clears the queue: the cold start, after which the agent auto-labels.
2. **Timed, 1 worker then 2**: the next items, split in two equal parts. For each part the clock starts at the
   first ``POST /projects/{p}/items`` (1,000 items per call, sent back to back) and the database is polled
   every 10 ms: *decided* is when no item of the part is pending or leased any more (each is auto-labeled or
   waiting in the review queue: the agent's pace), *labeled* when every item has its label (the oracle answered
   the escalations and audits meanwhile). The second worker starts between the parts and loads the project's
   ground truth from the store (warm) before its part is sent.
3. **Finite reviewers** (issue 20, :mod:`bench.service_queue`): a fresh project on the whole stream, arriving at a
   fixed rate, one reviewer client answering ``--reviewer-rate`` per arriving item (0.1) until the queue is empty;
   the worker re-decides what waits with each new certified snapshot. Human answers, items taken over, queue
   depth, wait, drain, precision: the replay's figures (``labelagent replay --reviewer-rate``) from the service.
4. **Review latency**: a project whose policy never auto-labels (``min_calibration`` out of reach) gets
   ``REVIEW_TASKS`` items; once the worker has queued them all, ``--reviewers`` concurrent clients (one API key
   each) claim and submit: first with a think time between claim and submit (``THINK``, for ``THINK_SECONDS``),
   then closed loop until the queue is empty (the API's saturation). Per task: the claim request's and the submit
   request's wall times on the client, and their sum; and the CPU time the API process, the worker and this
   process (the clients) used meanwhile, per answer.
5. **Peak RSS** of each process (``VmHWM``) just before it is stopped.

Only what runs: with PostgreSQL unreachable, its rows are left out and the report says so.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from bench import BENCHMARKS, ROOT, figure, write_section
from bench.service_driver import (
    INGEST_CALL,
    ORACLE_REVIEWERS,
    REVIEW_TASKS,
    THINK,
    THINK_SECONDS,
    WARM_ITEMS,
    WARM_WINDOW,
    Bench,
    Database,
)
from bench.service_queue import PERIOD, RATE, WINDOW, finite_reviewers
from bench.service_report import Setup, render
from policies import example_policy
from service.offline.datasets import LabeledItem, load_csv
from service.offline.liveserver import WorkerProcess
from service.offline.replay import shuffled
from service.serve import tune_gc

DEFAULT_DATA = Path(os.environ.get("LABELAGENT_DATA", ROOT.parent / "shared" / "data"))
QUEUE_PROJECT = "bench-queue"
DEFAULT_PG = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


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


@dataclass
class DatabaseFigures:
    """One database's figures: throughput, review latency, the finite-reviewer queue, peak RSS, the checks."""

    throughput: list[dict[str, Any]] = field(default_factory=list)
    latency: list[dict[str, Any]] = field(default_factory=list)
    queue: list[dict[str, Any]] = field(default_factory=list)
    rss: dict[str, int | None] = field(default_factory=dict)
    checks: list[str] = field(default_factory=list)


async def run_database(db: Database, rows: Sequence[LabeledItem], logs: Path, reviewers: int,
                       latency_only: bool = False, think_seconds: float = THINK_SECONDS, closed_loop: bool = True,
                       reviewer_rate: float = RATE) -> DatabaseFigures:
    """Throughput with 1 and 2 workers, the queue with finite reviewers, review latency, peak RSS, and the checks,
    on one database (the latency part alone with ``latency_only``)."""
    print(f"service: {db.name} ({db.version})", flush=True)
    bench = Bench(db, rows, logs, reviewers)
    out = DatabaseFigures(rss=bench.rss)
    try:
        bench.api.start()
        w1 = bench.start_worker()
        stream = shuffled(rows, 0, None)
        if latency_only:
            out.latency = await review_latency(bench, w1, stream, think_seconds, closed_loop)
            return out
        warm, rest = stream[:WARM_ITEMS], stream[WARM_ITEMS:]
        half = len(rest) // 2
        project = "bench-throughput"
        await bench.create_project(project, example_policy("sms_spam"))
        await bench.wait_for(lambda: w1.serving(project), "worker 1 serving the project")
        t = time.perf_counter()
        await bench.warm_up(project, warm)
        print(f"  warm-up: {len(warm)} items in {time.perf_counter() - t:.1f}s", flush=True)
        results = out.throughput
        results.append(await bench.timed(project, rest[:half], 1))
        print(f"  1 worker: {results[-1]['decided_rate']:.0f} items/s decided, "
              f"{results[-1]['labeled_rate']:.0f} items/s labeled", flush=True)
        w2 = bench.start_worker()
        await bench.wait_for(lambda: w2.serving(project), "worker 2 serving the project (warm)")
        results.append(await bench.timed(project, rest[half:], 2))
        print(f"  2 workers: {results[-1]['decided_rate']:.0f} items/s decided, "
              f"{results[-1]['labeled_rate']:.0f} items/s labeled", flush=True)
        once = bench.labeled_once(project)
        out.checks.append(f"{db.name}: {len(rows)} items, each labeled exactly once: {'yes' if once else 'NO'}")
        bench.rss["worker 2"] = w2.peak_rss()
        w2.stop()  # the queue and latency phases run with the API and one worker
        out.queue.append(await queue_phase(bench, w1, stream, reviewer_rate))
        out.checks.append(f"{db.name}: finite reviewers, each item labeled exactly once: "
                          f"{'yes' if bench.labeled_once(QUEUE_PROJECT) else 'NO'}")
        out.latency = await review_latency(bench, w1, stream, think_seconds, closed_loop)
        return out
    finally:
        bench.stop_all()


async def queue_phase(bench: Bench, worker: WorkerProcess, stream: Sequence[LabeledItem],
                      rate: float) -> dict[str, Any]:
    """The sms_spam policy on the whole stream, reviewers answering ``rate`` per arriving item (issue 20)."""
    policy = example_policy("sms_spam")
    created = asyncio.create_task(finite_reviewers(bench, QUEUE_PROJECT, policy, stream, rate))
    await bench.wait_for(lambda: created.done() or worker.serving(QUEUE_PROJECT), "worker 1 serving the queue project")
    r = await created
    print(f"  finite reviewers ({rate:g} per item): {r['human_answers']} answers, {r['taken_over']} taken over, "
          f"max depth {r['max_depth']}, {r['left_at_end']} left at the stream's end, drain {r['drain_share']:.2f} "
          f"of the stream, auto precision {figure(r['auto_precision'], '', '.4f')} ({r['seconds']:.0f} s)", flush=True)
    return r


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
              f"({r['tasks']} tasks, {r['conflicts']} conflicts); CPU per answer {figure(r['cpu_api'], ' ms')} "
              f"API, {figure(r['cpu_workers'], ' ms')} worker, {figure(r['cpu_client'], ' ms')} clients; "
              f"load {os.getloadavg()[0]:.1f}",
              flush=True)
    return latency


def print_logs(logs: Path) -> None:
    """The processes' own log lines (not the access log), the last 20 of each: after a failed run."""
    for log in sorted(logs.glob("*.log")):
        lines = [x for x in log.read_text(errors="replace").splitlines() if '" 20' not in x]
        print(f"--- {log.name}\n" + "\n".join(lines[-20:]))


async def _run(args: argparse.Namespace) -> int:
    data = args.data / "sms_spam.csv"
    if not data.exists():
        print(f"service: {data} is missing; the service benchmark needs sms_spam.csv (text,label)", flush=True)
        return 2
    rows = load_csv(data)
    tune_gc()  # as the API does: the clients' timings must not include full collections over the imported libraries
    started = time.perf_counter()
    load_before = os.getloadavg()[0]
    runs: dict[str, DatabaseFigures] = {}  # by database name
    versions: list[str] = []
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
                    run = await run_database(db, rows, logs, args.reviewers, args.latency_only,
                                             args.think_seconds, not args.no_closed_loop, args.reviewer_rate)
            except Exception as exc:
                if name == "postgres" and "connect" in repr(exc).lower():
                    notes.append(f"PostgreSQL skipped: {type(exc).__name__} connecting to "
                                 f"{make_url(args.postgres_url).render_as_string(hide_password=True)}")
                    print(f"service: {notes[-1]}", flush=True)
                    continue
                print_logs(logs)
                raise
            runs[db.name] = run
    notes.append(f"Load average (1 min) before the run: {load_before:.1f} on {os.cpu_count()} CPUs (other work on the "
                 f"machine); the benchmark's own processes raise it during the run ({os.getloadavg()[0]:.1f} at the "
                 "end). The timed parts last about a second or two each (the dataset's 5,574 items), so expect "
                 "run-to-run differences of tens of percent.")
    if args.latency_only:  # a partial run: figures on stdout, the report untouched
        print(f"service: latency only, {time.perf_counter() - started:.0f} s; load average now "
              f"{os.getloadavg()[0]:.1f} (before: {load_before:.1f})", flush=True)
        return 0
    setup = Setup(WARM_ITEMS, WARM_WINDOW, INGEST_CALL, ORACLE_REVIEWERS, REVIEW_TASKS, args.reviewers, THINK,
                  THINK_SECONDS, (WINDOW, PERIOD, args.reviewer_rate))
    every = list(runs.values())
    body = render(setup, [r for f in every for r in f.throughput], [r for f in every for r in f.latency],
                  [r for f in every for r in f.queue], {name: f.rss for name, f in runs.items()}, versions,
                  [c for f in every for c in f.checks], notes, time.perf_counter() - started)
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
    parser.add_argument("--reviewer-rate", type=float, default=RATE,
                        help="answers per arriving item in the finite-reviewer queue phase (issue 20)")
    parser.add_argument("--reviewers", type=int, default=50, help="concurrent reviewer clients (latency)")
    parser.add_argument("--output", type=Path, default=BENCHMARKS, help="the Markdown file to update")
    parser.add_argument("--no-write", action="store_true", help="print the section instead of writing it")
    args = parser.parse_args(argv)
    return asyncio.run(_run(args))
