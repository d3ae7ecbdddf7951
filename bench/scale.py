"""Long-stream benchmark: ``python -m bench scale [--items N] [--db sqlite|postgres] [--seed S] [--no-write]``.

A synthetic labeled stream (:mod:`bench.synthetic`: vocabulary, Zipf classes, label noise, a drift point at 60%)
goes through the real worker cycle (:func:`service.offline.replay.run_replay`: ingest, claim, one graph run per claim,
record; a simulated reviewer answers what is escalated with the stream's labels; the learner retrains when due).
Every window of 50,000 items (N/20 for N under 1,000,000) reports items/s, CPU seconds per item by stage,
RSS, database size, the review queue's depth, the statements/rows the store sent per item and how long the
counts behind the metrics endpoint took at the window's end (``SqlStore.stats``: items, tasks and labels). The stages:
tools (predict), training (the learner's retrain minus its calibration: fits and out-of-fold rescoring),
calibration (``Learner.recalibrate``), storage (every store call's thread CPU) and graph (the rest of the
process's CPU: LangGraph, the runner, the replay loop). Writes the ``scale-DB`` section of docs/BENCHMARKS.md
and docs/bench-scale-DB.png (items/s and RSS against stream position).

Time limit: 1,000,000 items on SQLite are designed to finish within ``TIME_LIMIT_S`` (60 min on 2 cores); the
run stops with exit code 1 when a window ends past the limit's share of the stream.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.engine import Engine, make_url

from bench import ROOT, machine_info, timed, write_section
from bench.synthetic import StreamSpec, labels, stream
from policies import Policy, parse_policy
from service.offline.datasets import LabeledItem
from service.store.base import StoreBase

TIME_LIMIT_S = 3600.0  # 1,000,000 items on 2 cores
WINDOW = 50_000
PG_URL = os.environ.get("LABELAGENT_BENCH_PG_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test")
STAGES = ("tools", "training", "calibration", "storage", "graph")


@dataclass
class Counters:
    """Thread-CPU seconds by stage and SQL traffic, summed over the run (read at window ends)."""

    cpu: dict[str, float] = field(default_factory=lambda: dict.fromkeys(STAGES, 0.0))
    statements: int = 0
    rows: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, stage: str, seconds: float) -> None:
        with self.lock:
            self.cpu[stage] += seconds


def _timed(fn: Callable[..., Any], stage: str, counters: Counters) -> Callable[..., Any]:
    """``fn`` with its thread CPU time counted under ``stage``."""
    return timed(fn, functools.partial(counters.add, stage), time.thread_time)


class TimedStore:
    """The store with every public method's thread CPU counted as storage (calls between its methods are not)."""

    def __init__(self, store: Any, counters: Counters) -> None:
        self._store, self._counters = store, counters

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._store, name)
        if isinstance(value, StoreBase):  # a repository (store.items, ...): its methods are storage too
            return TimedStore(value, self._counters)
        return _timed(value, "storage", self._counters) if callable(value) and not name.startswith("_") else value


def _count_sql(engine: Engine, counters: Counters) -> None:
    @event.listens_for(engine, "after_cursor_execute")
    def after(conn: Any, cursor: Any, statement: str, params: Any, context: Any, executemany: bool) -> None:
        counters.statements += 1
        if not statement.lstrip().upper().startswith("SELECT") and cursor.rowcount and cursor.rowcount > 0:
            counters.rows += cursor.rowcount


def _instrument_learner(counters: Counters) -> None:
    """Count ``Learner.prepare_retrain`` (the worker cycle's retrain: fits, pool, rescoring, the certificate's
    update) as training and ``recalibrate`` (after answers when no retrain is due) as calibration (this process
    only). ``Learner.retrain`` (a restore) calls ``prepare_retrain``, so it is counted too."""
    from agent.learner import Learner

    Learner.recalibrate = _timed(Learner.recalibrate, "calibration", counters)  # type: ignore[method-assign]
    Learner.prepare_retrain = _timed(Learner.prepare_retrain, "training", counters)  # type: ignore[method-assign]


def _instrument_tools(tools: Any, counters: Counters) -> None:
    """Count every tool class's ``predict`` as tools (this process only). On the class, not the instance: a retrain
    fits ``copy.copy`` twins (agent.folds.stage), and an instance attribute would ride along into the twin, bound to
    the original, which is never fitted (the twins would then vote with the untrained original's model)."""
    for cls in {type(tool) for tool in tools}:
        cls.predict = _timed(cls.predict, "tools", counters)


@dataclass
class Database:
    """The run's database: its engine, its size on disk, what stands in for the server's autovacuum, and closing."""

    engine: Engine
    size: Callable[[], int]
    close: Callable[[], None]
    vacuum: Callable[[], float] = lambda: 0.0  # seconds spent; a no-op where the server vacuums by itself
    note: str = ""


def _engine(db: str, tmp: Path) -> Database:
    from service.store.db import create_all, make_engine

    if db == "sqlite":
        path = tmp / "scale.db"
        engine = make_engine(f"sqlite:///{path}")
        create_all(engine)
        return Database(engine, lambda: sum(p.stat().st_size for p in tmp.glob("scale.db*")), engine.dispose)
    schema = f"scale_{uuid.uuid4().hex[:12]}"
    admin = make_engine(PG_URL)
    with admin.begin() as conn:
        conn.execute(text(f'CREATE SCHEMA "{schema}"'))
        autovacuum = conn.execute(text("SHOW autovacuum")).scalar() == "on"
    engine = make_engine(str(make_url(PG_URL).update_query_dict({"options": f"-csearch_path={schema}"})))
    create_all(engine)

    def size() -> int:
        with admin.connect() as conn:
            return int(conn.execute(text(
                "SELECT coalesce(sum(pg_total_relation_size(c.oid)), 0) FROM pg_class c JOIN pg_namespace n "
                "ON n.oid = c.relnamespace WHERE n.nspname = :s AND c.relkind = 'r'"), {"s": schema}).scalar())

    def vacuum() -> float:
        """What autovacuum would do: every item is updated two or three times (claimed, decided), and the dead
        row versions slow the claims and counts down (items/s halved by 350,000 items without it, measured)."""
        started = time.perf_counter()
        with admin.connect() as conn:
            tables = conn.execute(text("SELECT tablename FROM pg_tables WHERE schemaname = :s"), {"s": schema})
            names = [str(t) for t in tables.scalars()]
        with admin.connect().execution_options(isolation_level="AUTOCOMMIT") as conn:
            for name in names:
                conn.execute(text(f'VACUUM (ANALYZE) "{schema}"."{name}"'))
        return time.perf_counter() - started

    def drop() -> None:
        engine.dispose()
        with admin.begin() as conn:
            conn.execute(text(f'DROP SCHEMA "{schema}" CASCADE'))
        admin.dispose()
    if autovacuum:
        return Database(engine, size, drop)
    return Database(engine, size, drop, vacuum, "The server runs with `autovacuum = off` (this machine's test "
                    "PostgreSQL), so the bench vacuums the run's tables at every window's end, as autovacuum would; "
                    "that time is in the next window's items/s")


def _rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def build_stream(spec: StreamSpec, seed: int) -> list[LabeledItem]:
    """The stream in ``run_replay``'s input order such that its seeded shuffle gives back the generated order."""
    import numpy as np

    ordered = [row for chunk in stream(spec) for row in chunk]
    order = np.random.default_rng(seed).permutation(len(ordered))
    rows: list[LabeledItem] = [ordered[0]] * len(ordered)
    for i, j in enumerate(order.tolist()):
        rows[j] = ordered[i]
    return rows


def scale_policy(spec: StreamSpec) -> Policy:
    return parse_policy({
        "project": "scale", "version": 1, "data_kind": "text", "labels": labels(spec), "target_precision": 0.9,
        "tools": [{"name": "classifier", "kind": "text_classifier", "cost": 1.0, "c": 30},
                  {"name": "retrieval", "kind": "retrieval", "cost": 1.0, "k": 10}],
        "audit_rate": 0.01, "min_calibration": 150, "calibration_window": 4000, "retrain_every": 250,
    })


@dataclass
class Window:
    end: int
    items_s: float
    cpu_per_item_ms: dict[str, float]
    rss_mb: float
    db_mb: float
    queue: int
    stats_ms: float
    statements_per_item: float
    rows_per_item: float


async def run(spec: StreamSpec, db: str, window: int) -> tuple[list[Window], dict[str, Any]]:
    from service.offline.replay import ReplayConfig, run_replay
    from service.store import SqlStore
    from tools.registry import build_tools

    policy = scale_policy(spec)
    rows = build_stream(spec, spec.seed)
    counters = Counters()
    _instrument_learner(counters)
    tools = build_tools(policy)
    _instrument_tools(tools, counters)
    windows: list[Window] = []
    with tempfile.TemporaryDirectory(prefix="bench-scale-") as tmp:
        database = _engine(db, Path(tmp))
        _count_sql(database.engine, counters)
        store = SqlStore(database.engine)
        vacuumed: list[float] = []
        state = {"seen": 0, "t": time.perf_counter(), "cpu": time.process_time(), "stages": dict(counters.cpu),
                 "st": 0, "rows": 0}

        def on_batch(n: int) -> None:
            state["seen"] += n
            last = windows[-1].end if windows else 0
            if state["seen"] - last < window and state["seen"] != len(rows):
                return
            now, cpu, items = time.perf_counter(), time.process_time(), state["seen"] - last
            stages = {k: counters.cpu[k] - state["stages"][k] for k in STAGES}
            stages["graph"] = (cpu - state["cpu"]) - sum(v for k, v in stages.items() if k != "graph")
            read = time.perf_counter()
            queue = store.stats(policy.project)["tasks"].get("open", 0)
            read = time.perf_counter() - read
            windows.append(Window(state["seen"], items / (now - state["t"]),
                                  {k: 1000 * v / items for k, v in stages.items()}, _rss_mb(), database.size() / 2**20,
                                  queue, 1000 * read, (counters.statements - state["st"]) / items,
                                  (counters.rows - state["rows"]) / items))
            print(_row(windows[-1]), flush=True)
            state.update(t=now, cpu=cpu, stages=dict(counters.cpu), st=counters.statements, rows=counters.rows)
            vacuumed.append(database.vacuum())

        try:
            summary = await run_replay(rows, policy, tools, TimedStore(store, counters),  # type: ignore[arg-type]
                                       _config(spec.seed, ReplayConfig), on_batch=on_batch)
        finally:
            database.close()
    if database.note:
        summary["database_note"] = f"{database.note} ({sum(vacuumed):.1f} s in all)."
    return windows, summary


def _config(seed: int, cls: Any) -> Any:
    return cls(batch_size=256, seed=seed)


def steadier(windows: list[Window], ref_end: int) -> tuple[float, float]:
    """Beside one window against one: the items-weighted items/s of the last three full windows over that of the
    three windows around ``ref_end``, and the same for CPU ms per item (all stages) the other way round (above 1:
    the end costs less). A window is full when it holds as many items as the first."""
    size = windows[0].end
    full = [w for i, w in enumerate(windows) if w.end - (windows[i - 1].end if i else 0) >= size]
    at = next((i for i, w in enumerate(full) if w.end >= ref_end), 0)
    around, last = full[max(0, at - 1):at + 2], full[-3:]

    def rate(ws: list[Window]) -> float:  # equal-sized windows: items over seconds
        return len(ws) / sum(1.0 / w.items_s for w in ws)

    def cpu(ws: list[Window]) -> float:
        return sum(sum(w.cpu_per_item_ms.values()) for w in ws) / len(ws)

    return rate(last) / rate(around), cpu(around) / cpu(last)


def _row(w: Window) -> str:
    stages = " | ".join(f"{w.cpu_per_item_ms[k]:.3f}" for k in STAGES)
    return (f"| {w.end:,} | {w.items_s:,.0f} | {stages} | {w.rss_mb:,.0f} | {w.db_mb:,.1f} | {w.queue} | "
            f"{w.stats_ms:,.1f} | {w.statements_per_item:.2f} | {w.rows_per_item:.2f} |")


HEADER = ("| items | items/s | CPU ms/item: tools | training | calibration | storage | graph | RSS MB | DB MB | "
          "open reviews | counts ms | statements/item | rows written/item |\n" + "| --- " * 14 + "|")


def plot(path: Path, windows: list[Window], title: str) -> None:
    """Items/s (red, left scale) and RSS (blue, right scale) against stream position, drawn with Pillow."""
    from PIL import Image, ImageDraw

    w, h, left, right, top, bottom = 720, 400, 70, 70, 40, 50
    img = Image.new("RGB", (w, h), "white")
    d = ImageDraw.Draw(img)
    d.rectangle([left, top, w - right, h - bottom], outline="black")
    d.text((left, 12), title, fill="black")
    n = max(x.end for x in windows)
    for values, color, side in (([x.items_s for x in windows], (200, 30, 60), left - 60),
                                ([x.rss_mb for x in windows], (40, 110, 200), w - right + 5)):
        top_v = max(values) * 1.1 or 1.0
        pts = [(left + x.end / n * (w - left - right), h - bottom - v / top_v * (h - top - bottom))
               for x, v in zip(windows, values, strict=True)]
        d.line(pts, fill=color, width=2) if len(pts) > 1 else d.ellipse([*pts[0], pts[0][0] + 3, pts[0][1] + 3])
        for i in range(5):
            v = top_v * i / 4
            d.text((side, h - bottom - v / top_v * (h - top - bottom) - 6), f"{v:,.0f}", fill=color)
    d.text((left, h - bottom + 10), f"0 ... {n:,} items   (red: items/s, blue: RSS MB)", fill="black")
    img.save(path)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench scale", description=__doc__.split("\n\n")[0])
    parser.add_argument("--items", type=int, default=200_000)
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-write", action="store_true", help="print the table only")
    args = parser.parse_args(argv)
    spec = StreamSpec(items=args.items, seed=args.seed)
    window = WINDOW if args.items >= 1_000_000 else max(1, args.items // 20)
    print(HEADER, flush=True)
    started = time.perf_counter()
    windows, summary = asyncio.run(run(spec, args.db, window))
    elapsed = time.perf_counter() - started
    limit = TIME_LIMIT_S * args.items / 1_000_000
    ref = next((x for x in windows if x.end >= 100_000), windows[0])
    steady = steadier(windows, ref.end)
    body = "\n".join([
        f"## Long stream ({args.items:,} synthetic items, {args.db}, seed {args.seed})", "",
        f"{machine_info()}; load average at the end {os.getloadavg()[0]:.1f}. "
        f"`python -m bench scale --items {args.items} --db {args.db}`: {elapsed:,.0f} s "
        f"(limit {limit:,.0f} s: {TIME_LIMIT_S / 60:.0f} min per million items); human reviews "
        f"{summary.get('human_reviews', 'n/a')}, auto precision {summary.get('auto_precision', 'n/a')}. "
        f"Last window / window at {ref.end:,} items: {windows[-1].items_s / ref.items_s:.2f} (goal >= 0.8). "
        f"Steadier, the last three full windows against the three around {ref.end:,}: items/s "
        f"{steady[0]:.2f}, CPU per item {steady[1]:.2f} (each above 1: the end is faster). "
        f"{summary.get('database_note', '')}".rstrip(), "",
        HEADER, *(_row(x) for x in windows), "", f"![items/s and RSS](bench-scale-{args.db}.png)"])
    print(body)
    if not args.no_write:
        plot(ROOT / "docs" / f"bench-scale-{args.db}.png", windows, f"bench scale: {args.items:,} items on {args.db}")
        write_section(f"scale-{args.db}", body)
    return 0 if elapsed <= limit else 1
