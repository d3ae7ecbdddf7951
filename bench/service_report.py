"""The figures and the Markdown section of the service benchmark (:mod:`bench.service`)."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from bench import figure, machine_info


@dataclass
class ReviewStats:
    """Per answered task: the claim request's and the submit request's wall times (seconds), and their sum."""

    claim: list[float] = field(default_factory=list)
    submit: list[float] = field(default_factory=list)
    pair: list[float] = field(default_factory=list)
    answered: int = 0
    conflicts: int = 0
    cpu: dict[str, float] = field(default_factory=dict)  # CPU seconds used meanwhile: "api", "workers", "client"


@dataclass(frozen=True)
class Setup:
    """The benchmark's parameters, as the report states them."""

    warm_items: int
    warm_window: int
    ingest_call: int
    oracle_reviewers: int
    review_tasks: int
    reviewers: int
    think: tuple[float, float]
    think_seconds: float
    queue: tuple[int, float, float] = (100, 0.25, 0.1)  # finite reviewers: items per arrival, seconds between, rate


def percentile(values: Sequence[float], q: float) -> float:
    """The nearest-rank percentile (``q`` in 0..1); NaN for no values."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1))] if ordered else float("nan")


def latency_figures(database: str, reviewers: int, think: tuple[float, float] | None, stats: ReviewStats,
                    elapsed: float) -> dict[str, Any]:
    ms = {"claim": stats.claim, "submit": stats.submit, "pair": stats.pair}
    out: dict[str, Any] = {"database": database, "reviewers": reviewers, "think": think, "tasks": stats.answered,
                           "conflicts": stats.conflicts, "answers_per_s": stats.answered / elapsed}
    for name, values in ms.items():
        out[f"{name}_p50"] = 1000 * percentile(values, 0.50)
        out[f"{name}_p99"] = 1000 * percentile(values, 0.99)
    for name in ("api", "workers", "client"):  # CPU milliseconds per answered task
        seconds = stats.cpu.get(name)
        out[f"cpu_{name}"] = 1000 * seconds / stats.answered if seconds is not None and stats.answered else None
    return out


def _mb(value: int | None) -> str:
    return figure(None if value is None else value / 2**20, " MB", ".0f")


def _load(think: tuple[float, float] | None) -> str:
    return "closed loop, no think time" if think is None else f"think time {think[0]:g}-{think[1]:g} s"


def render(setup: Setup, throughput: list[dict[str, Any]], latency: list[dict[str, Any]], queue: list[dict[str, Any]],
           rss: dict[str, dict[str, int | None]], versions: list[str], checks: list[str], notes: list[str],
           seconds: float) -> str:
    s = setup
    out = ["## Service", "",
           f"{machine_info()}; {', '.join(versions)}. `python -m bench service` ({seconds:.0f} s in all). Everything "
           "on 127.0.0.1 and on this machine's CPUs: `labelagent serve --no-worker --log-level WARNING` (the API: one "
           "uvicorn process on uvloop and httptools, no access log), `labelagent worker` processes, and the clients "
           "(httpx, in the benchmark's process, its startup heap frozen out of the garbage collector as the API's "
           "is). Data: the SMS Spam "
           "Collection in a seeded shuffle, the `sms_spam` example policy. Per-key rate limits off and workers "
           "polling every 0.1 s (`service.offline.liveserver.FAST_ENV`); everything else at its defaults "
           "(claims of up to "
           "256 items, database pools of 5 + 10).", ""]
    out += ["### Ingest to labeled (HTTP)", "",
            f"A warm project: the first {s.warm_items} items go through the cold start untimed ({s.warm_window} at a "
            f"time, an oracle of {s.oracle_reviewers} reviewer clients answering from the dataset through the review "
            "routes). The rest is split in two parts timed one after the other, with 1 worker process, then 2 (the "
            "second loads the project's answers from the database before its part is sent). The clock starts at "
            f"the first `POST /projects/{{p}}/items` ({s.ingest_call} items per call, back to back) and the "
            "database is polled every 10 ms. **Decided**: no item of the part is pending or leased any more (each "
            "is auto-labeled or queued for review: the agent's pace). **Labeled**: every item has its label, the "
            "oracle having answered the escalations and audits meanwhile.", "",
            "| database | workers | items | ingest calls (s) | decided (s) | **decided items/s** | labeled (s) "
            "| **labeled items/s** | auto-labeled | human answers |",
            "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in throughput:
        out.append(f"| {r['database']} | {r['workers']} | {r['items']} | {r['ingest']:.2f} | {r['decided']:.2f} "
                   f"| **{r['decided_rate']:.0f}** | {r['labeled']:.2f} | **{r['labeled_rate']:.0f}** "
                   f"| {r['auto_rate']:.1%} | {r['human']} |")
    out += _queue(setup, queue)
    out += ["", "### Review claim + submit latency (HTTP)", "",
            f"{s.review_tasks} review tasks queued by the worker (a policy that never auto-labels); "
            f"{s.reviewers} concurrent reviewer clients, one API key each. First with a think time (each answer "
            f"sent {s.think[0]:g} to {s.think[1]:g} s after its claim, uniformly; for {s.think_seconds:g} s), then "
            "closed loop (each client claims again as soon as its answer is in, until the queue is empty: the "
            "API's saturation). Latency = the claim request's wall time plus the submit request's, on the client "
            "(think time excluded). The worker keeps learning from the answers meanwhile, as in production. CPU per "
            "answer: the CPU time (user + system) the API process, the worker and the clients' process used during "
            "the measurement, divided by the answers (PostgreSQL's own processes not included).", "",
            "| database | reviewers | load | tasks | answers/s | claim p50 / p99 (ms) | submit p50 / p99 (ms) "
            "| **claim+submit p50 / p99 (ms)** | 409s | CPU per answer (ms): API / worker / clients |",
            "|---|---:|---|---:|---:|---:|---:|---:|---:|---:|"]
    for r in latency:
        out.append(f"| {r['database']} | {r['reviewers']} | {_load(r['think'])} | {r['tasks']} "
                   f"| {r['answers_per_s']:.0f} | {r['claim_p50']:.1f} / {r['claim_p99']:.1f} "
                   f"| {r['submit_p50']:.1f} / {r['submit_p99']:.1f} | **{r['pair_p50']:.1f} / {r['pair_p99']:.1f}** "
                   f"| {r['conflicts']} | {figure(r.get('cpu_api'))} / {figure(r.get('cpu_workers'))} "
                   f"/ {figure(r.get('cpu_client'))} |")
    out += ["", "### Peak memory (RSS)", "",
            "`VmHWM` of each process just before it was stopped (the API after every phase; worker 2 after the "
            "throughput phase).", "",
            "| database | API process | worker 1 | worker 2 |", "|---|---:|---:|---:|"]
    for name, values in rss.items():
        out.append(f"| {name} | {_mb(values.get('api'))} | {_mb(values.get('worker 1'))} "
                   f"| {_mb(values.get('worker 2'))} |")
    out += _goals(throughput, latency, checks, notes)
    return "\n".join(out) + "\n"


def _queue(setup: Setup, queue: list[dict[str, Any]]) -> list[str]:
    """The finite-reviewer phase (issue 20): the replay's queue figures, from the running service."""
    window, period, rate = setup.queue
    out = ["", "### Finite reviewers: the queue re-decided (HTTP, issue 20)", "",
           f"A fresh project on the whole stream (the `sms_spam` policy, target 0.98): {window} items arrive every "
           f"{period:g} s; after each arrival is decided, one reviewer client answers {rate:g} per arriving item "
           "(claim and submit, as a person would; nothing banked while the queue is empty), and after the stream "
           "the clock runs on until the queue is empty. The worker learns on its own schedule and re-decides the "
           "waiting items with each new certified snapshot (`queue.taken_over` in the project's metrics). Wait: "
           "from arrival to answer, in items of stream time. `labelagent replay --reviewer-rate` gives the same "
           "figures offline (DESIGN-NOTES section 16); here learning runs beside the stream, not in step with it.",
           "", "| database | items | human answers | taken over (right) | max depth | mean / p90 wait "
           "| left at end | drain / stream | auto precision | seconds |",
           "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for r in queue:
        out.append(f"| {r['database']} | {r['items']} | {r['human_answers']} | {r['taken_over']} "
                   f"({figure(r['taken_over_precision'], '', '.3f')}) | {r['max_depth']} | {r['wait_mean']:.0f} / "
                   f"{r['wait_p90']:.0f} | {r['left_at_end']} | {r['drain_share']:.2f} "
                   f"| {figure(r['auto_precision'], '', '.4f')} | {r['seconds']:.0f} |")
    return out


def _goals(throughput: list[dict[str, Any]], latency: list[dict[str, Any]], checks: list[str],
           notes: list[str]) -> list[str]:
    """The report's last section: the service's goals, met or not, then the run's checks and notes."""
    out = ["", "### Goals and checks", ""]
    sqlite = [r for r in throughput if r["database"] == "SQLite"]
    if sqlite:
        decided = max(r["decided_rate"] for r in sqlite)
        labeled = max(r["labeled_rate"] for r in sqlite)
        out.append(f"- >= 1,000 items/s ingest-to-labeled on SQLite: best {decided:.0f} items/s decided by the agent, "
                   f"{labeled:.0f} items/s labeled with the oracle's answers ("
                   f"{'met' if labeled >= 1000 else 'met by the agent alone' if decided >= 1000 else 'NOT met'}).")
    for r in latency:
        if r["database"] == "PostgreSQL":
            out.append(f"- claim+submit p99 <= 50 ms on PostgreSQL, {r['reviewers']} reviewers, {_load(r['think'])}: "
                       f"{r['pair_p99']:.1f} ms ({'met' if r['pair_p99'] <= 50 else 'NOT met'}).")
    out += [f"- {c}" for c in checks]
    out += [f"- {n}" for n in notes]
    return out
