"""The ``labelagent`` command line."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from policies import InputError, LabelAgentError, Policy, example_policy, load_policy
from service.cli_policy import add_policy_parser
from service.offline import RETRAIN_LAG
from service.settings import Settings, get_settings

if TYPE_CHECKING:
    from service.offline.datasets import LabeledItem

# Each command imports what it needs when it runs: `labelagent --help` or `keys list` need not load the agent, its
# graph library and the tools (about 4 s on a small machine).


def _progress(total: int, enabled: bool):
    if not enabled:
        return None, None
    from tqdm import tqdm

    bar = tqdm(total=total, unit="item", file=sys.stderr, dynamic_ncols=True)
    return bar, bar.update


def cmd_replay(args: argparse.Namespace) -> int:
    from service.offline.datasets import load_csv
    from service.offline.replay import ReplayConfig, run_replay
    from service.settings import tool_environment
    from service.store import SqlStore
    from service.store.db import create_all, make_engine
    from tools.registry import build_tools

    policy = load_policy(args.policy) if args.policy else example_policy(Path(args.dataset).stem)
    rows = load_csv(args.dataset, drop_columns=args.drop_columns or ())
    total = min(len(rows), args.limit) if args.limit else len(rows)
    if args.url:
        if args.reviewer_rate is not None or args.plain_queue or args.queue_parts is not None:
            raise InputError("--reviewer-rate, --plain-queue and --queue-parts are for the in-process replay; "
                             "a running service's queue is answered by --reviewers clients")
        return _print_summary(_replay_http(args, policy, rows, total), args.json)
    with tempfile.TemporaryDirectory(prefix="labelagent-replay-") as tmp:
        url = args.db or f"sqlite:///{Path(tmp) / 'replay.db'}"
        engine = make_engine(url)
        create_all(engine)
        store = SqlStore(engine)
        bar, update = _progress(total, not args.json and sys.stderr.isatty() and not args.no_progress)
        config = ReplayConfig(batch_size=args.batch_size, seed=args.seed, limit=args.limit,
                              order=getattr(args, "order", "shuffle"),
                              retrain_lag=getattr(args, "retrain_lag", RETRAIN_LAG),
                              reviewer_rate=args.reviewer_rate, plain_queue=args.plain_queue,
                              queue_parts=args.queue_parts)
        tools = build_tools(policy, env=tool_environment(get_settings()))  # endpoints from LABELAGENT_* settings
        try:
            summary = asyncio.run(run_replay(rows, policy, tools, store, config, on_batch=update))
        finally:
            if bar is not None:
                bar.close()
            engine.dispose()
    return _print_summary(summary, args.json)


def _replay_http(args: argparse.Namespace, policy: Policy, rows: list[LabeledItem], total: int) -> dict[str, Any]:
    """``replay --url``: the same stream through a running service's HTTP API (see service/offline/http_replay.py)."""
    from service.offline.http_replay import replay_over_http

    if args.db:
        raise InputError("--db and --url exclude each other: with --url the service's database is used")
    bar, update = _progress(total, not args.json and sys.stderr.isatty() and not args.no_progress)
    try:
        return replay_over_http(args, policy, rows, on_batch=update)
    finally:
        if bar is not None:
            bar.close()


def _print_summary(summary: dict[str, Any], as_json: bool) -> int:
    if as_json:
        print(json.dumps(summary))
    else:
        from service.offline.report import report

        print(report(summary))
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    """``labelagent demo``: serve the demo project with the shipped SMS stream and simulated reviewers."""
    from service.offline.demo.run import DEMO_DATABASE, run_demo
    from service.offline.demo.simulation import DemoOptions
    from service.serve import setup_logging

    setup_logging(args.log_level)
    options = DemoOptions(project=args.project, rate=args.rate, reviewers=args.reviewers,
                          review_delay=args.review_delay)
    settings = get_settings().model_copy(update={"database_url": args.db or DEMO_DATABASE})
    return run_demo(settings, options=options, host=args.host, port=args.port, reset=args.reset,
                    log_level=args.log_level)


def _settings(args: argparse.Namespace) -> Settings:
    """The environment's settings (``LABELAGENT_*``), with ``--db`` overriding the database URL."""
    settings = get_settings()
    return settings.model_copy(update={"database_url": args.db}) if getattr(args, "db", None) else settings


def cmd_serve(args: argparse.Namespace) -> int:
    from service.serve import serve, setup_logging

    setup_logging(args.log_level)
    workers = 0 if args.no_worker else args.workers
    return serve(_settings(args), host=args.host, port=args.port, workers=workers, demo=not args.no_demo,
                 log_level=args.log_level)


def cmd_worker(args: argparse.Namespace) -> int:
    from service.serve import run_worker, setup_logging

    setup_logging(args.log_level)
    return run_worker(_settings(args), projects=args.project, source=args.source, name=args.name)


def cmd_db(args: argparse.Namespace) -> int:
    from service.store.db import engine_from_settings
    from service.store.migrate import current_revision, head_revision, upgrade

    settings = _settings(args)
    engine = engine_from_settings(settings)
    where = engine.url.render_as_string(hide_password=True)
    try:
        if args.db_command == "upgrade":
            before = current_revision(engine)
            after = upgrade(engine, args.revision)
            print(f"{where}: {before or 'empty'} -> {after}" if before != after else f"{where}: already at {after}")
        else:
            current, head = current_revision(engine), head_revision()
            state = "up to date" if current == head else "behind: run `labelagent db upgrade`"
            print(f"{where}: at {current or 'no revision'}; head is {head} ({state})")
    finally:
        engine.dispose()
    return 0


def cmd_keys(args: argparse.Namespace) -> int:
    """``labelagent keys create|list|revoke``: API keys (a new key is printed once; only its hash is stored)."""
    from service.store import SqlStore
    from service.store.db import engine_from_settings
    from service.store.migrate import ensure_schema

    engine = engine_from_settings(_settings(args))
    try:
        ensure_schema(engine)
        store = SqlStore(engine, _settings(args))
        if args.keys_command == "create":
            key, record = store.projects.create_key(name=args.name, role=args.role, projects=args.project)
            scope = ", ".join(record.projects) if record.projects is not None else "every project"
            print(f"created {record.role} key {record.prefix} ({record.name}) for {scope}; it is shown only now:")
            print(key)
        elif args.keys_command == "list":
            for r in store.projects.list_keys():
                state = f"revoked {r.revoked_at:%Y-%m-%d %H:%M}" if r.revoked_at else "active"
                scope = ",".join(r.projects) if r.projects is not None else "*"
                print(f"{r.prefix}  {r.role:<8}  {state:<24}  projects={scope}  {r.name}")
        else:
            record = store.projects.revoke_key(args.prefix)
            print(f"revoked key {record.prefix} ({record.name})")
    finally:
        engine.dispose()
    return 0


def _add_demo_parser(sub: Any) -> None:
    demo = sub.add_parser("demo", help="serve a demo: the shipped SMS Spam Collection streamed into project "
                                       "sms_spam, simulated reviewers answering from its labels")
    demo.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    demo.add_argument("--port", type=int, default=8000, help="port to listen on")
    demo.add_argument("--db", help="database URL (default: sqlite:///./labelagent-demo.db; never "
                                   "LABELAGENT_DATABASE_URL)")
    demo.add_argument("--reset", action="store_true", help="delete the demo's SQLite database first: start over")
    demo.add_argument("--project", default="sms_spam", help="the demo project's name")
    demo.add_argument("--rate", type=float, default=5.0, help="items streamed per second")
    demo.add_argument("--reviewers", type=int, default=4, help="simulated reviewers working at once")
    demo.add_argument("--review-delay", type=float, default=1.0,
                      help="seconds a simulated reviewer holds a task before answering it")
    demo.add_argument("--log-level", default="WARNING")
    demo.set_defaults(func=cmd_demo)


def _add_queue_arguments(replay: argparse.ArgumentParser) -> None:
    """Issue 20: finite reviewers, and the queue's parts to compare."""
    replay.add_argument("--reviewer-rate", type=float, metavar="R",
                        help="finite reviewers: at most R answers per arriving item (0.25: one answer for every four "
                             "items), the queue drained at that rate after the stream (default: every escalation "
                             "answered before the next graph run)")
    replay.add_argument("--plain-queue", action="store_true",
                        help="the review queue as before issue 20: every cold-start item a calibration sample, fixed "
                             "priorities, no re-decision of waiting items (for comparisons)")
    replay.add_argument("--queue-parts", metavar="PARTS",
                        help="which of issue 20's parts run, comma-separated: sample,order,redecide,release "
                             "(default: all; release needs redecide)")


def _add_replay_parser(sub: Any) -> None:
    replay = sub.add_parser("replay", help="stream a labeled CSV through the agent with an oracle reviewer")
    replay.add_argument("dataset", help="CSV with text,label (other columns become metadata)")
    replay.add_argument("--policy", help="policy YAML (default: the example named after the dataset)")
    replay.add_argument("--limit", type=int, help="replay only the first N items of the shuffled stream")
    replay.add_argument("--seed", type=int, default=0, help="shuffle and agent seed")
    replay.add_argument("--order", choices=("shuffle", "file"), default="shuffle",
                        help="stream order: seeded shuffle (default) or the file's order (time series)")
    replay.add_argument("--batch-size", type=int, default=256,
                        help="most items per graph run (fewer while the agent has little ground truth)")
    replay.add_argument("--retrain-lag", type=int, default=RETRAIN_LAG,
                        help="graph runs from a retrain's start to its publication (default %(default)s: the service, "
                             "whose next batch waits for a retrain; n > 1: fits that outlast its wait)")
    replay.add_argument("--json", action="store_true", help="print one JSON summary as the last line")
    replay.add_argument("--db", help="database URL (default: a temporary SQLite file)")
    replay.add_argument("--drop-columns", nargs="*", help="columns the agent must not see")
    replay.add_argument("--no-progress", action="store_true", help="no progress bar")
    _add_queue_arguments(replay)
    over = replay.add_argument_group("through a running service (--url)")
    over.add_argument("--url", help="replay through the HTTP API of a running service, e.g. http://127.0.0.1:8000")
    over.add_argument("--api-key", help="an operator API key (default: $LABELAGENT_KEY)")
    over.add_argument("--project", help="project to create (default: <policy project>-replay-<random>)")
    over.add_argument("--reviewers", type=int, default=4, help="concurrent oracle reviewer clients")
    over.add_argument("--window", type=int, help="items in flight (default: one batch, like the in-process "
                                                 "replay; 0: ingest everything at once)")
    over.add_argument("--timeout", type=float, default=600.0, help="seconds for every item to be labeled")
    over.add_argument("--skip-evidence", action="store_true",
                      help="do not read each item's evidence (no tool_calls; one request per item saved)")
    replay.set_defaults(func=cmd_replay)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="labelagent", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    _add_replay_parser(sub)

    _add_demo_parser(sub)

    add_policy_parser(sub)

    serve = sub.add_parser("serve", help="the HTTP API with an in-process worker (default: ./labelagent.db)")
    serve.add_argument("--host", default="127.0.0.1", help="interface to listen on")
    serve.add_argument("--port", type=int, default=8000, help="port to listen on")
    serve.add_argument("--workers", type=int, default=1,
                       help="workers: one in this process, the others as `labelagent worker` processes")
    serve.add_argument("--no-worker", action="store_true", help="the API only (workers run elsewhere)")
    serve.add_argument("--no-demo", action="store_true", help="do not create the demo project on an empty database")
    serve.add_argument("--db", help="database URL (default: LABELAGENT_DATABASE_URL, else sqlite:///./labelagent.db)")
    serve.add_argument("--log-level", default="INFO")
    serve.set_defaults(func=cmd_serve)

    worker = sub.add_parser("worker", help="label pending items of every project (workers alone)")
    worker.add_argument("--source", help="also consume items from a broker: redis://HOST:PORT/STREAM, "
                                         "nats://HOST:PORT/STREAM or amqp://USER:PASS@HOST:PORT/VHOST?queue=Q "
                                         "(message format and options: service/runtime/sources/)")
    worker.add_argument("--project", action="append", help="serve only this project (repeatable)")
    worker.add_argument("--name", help="worker name recorded on its leases (default: worker-HOST-PID)")
    worker.add_argument("--db", help="database URL (default: LABELAGENT_DATABASE_URL)")
    worker.add_argument("--log-level", default="INFO")
    worker.set_defaults(func=cmd_worker)

    db = sub.add_parser("db", help="database schema migrations (Alembic)")
    db_sub = db.add_subparsers(dest="db_command", required=True)
    up = db_sub.add_parser("upgrade", help="migrate the database to the latest schema (creates it when empty)")
    up.add_argument("--revision", default="head", help="target revision (default: head)")
    up.add_argument("--db", help="database URL (default: LABELAGENT_DATABASE_URL)")
    current = db_sub.add_parser("current", help="show the database's schema revision")
    current.add_argument("--db", help="database URL (default: LABELAGENT_DATABASE_URL)")
    db.set_defaults(func=cmd_db)

    keys = sub.add_parser("keys", help="API keys: create (printed once), list, revoke")
    keys_sub = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_sub.add_parser("create", help="create a key and print it (only its hash is stored)")
    create.add_argument("--role", required=True, choices=["ingest", "reviewer", "operator"])
    create.add_argument("--project", action="append", help="a project the key may use (repeatable; default: all)")
    create.add_argument("--name", default="", help="what the key is for")
    keys_sub.add_parser("list", help="list keys (prefix, role, state, projects; never the keys)")
    revoke = keys_sub.add_parser("revoke", help="revoke a key at once")
    revoke.add_argument("prefix", help="the key's prefix (the 12 hex digits after 'la_', shown by list)")
    for p in (create, keys_sub.choices["list"], revoke):
        p.add_argument("--db", help="database URL (default: LABELAGENT_DATABASE_URL)")
    keys.set_defaults(func=cmd_keys)
    return parser


def limit_blas_threads() -> None:
    """One BLAS thread per process: the agent's linear algebra is many small problems, where BLAS threads
    cost 3-10x more than they give (measured on the pool fit), and workers scale by processes instead."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(limits=1, user_api="blas")


def quiet_model_loading() -> None:
    """No progress bars while a pretrained model loads (Hugging Face's "Loading weights" on stderr at every tool
    build: noise in a server's log). Set before those libraries are imported; an explicit setting is kept."""
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    limit_blas_threads()
    quiet_model_loading()
    try:
        return int(args.func(args))
    except LabelAgentError as exc:
        print(f"labelagent: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
