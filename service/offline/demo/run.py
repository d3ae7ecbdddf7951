"""``labelagent demo``: prepare the demo database (schema, project, keys), then serve it with the simulation."""

from __future__ import annotations

import logging
from pathlib import Path

from sqlalchemy.engine import make_url

from policies import InputError, example_policy
from service.offline.demo.control import SIMULATED_REVIEWER
from service.offline.demo.dataset import ATTRIBUTION, load_rows
from service.offline.demo.simulation import DemoOptions, Simulation
from service.serve import ServeHooks, serve
from service.settings import Settings
from service.store import SqlStore
from service.store.db import engine_from_settings
from service.store.migrate import ensure_schema

log = logging.getLogger("labelagent.demo")

DEMO_DATABASE = "sqlite:///./labelagent-demo.db"
ACTOR = "labelagent demo"


def reset_database(url: str) -> None:
    """Delete the demo's SQLite file (and its WAL files): the next start begins at the first row."""
    parsed = make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database or parsed.database == ":memory:":
        raise InputError(f"--reset deletes a SQLite demo database file; {parsed.render_as_string(hide_password=True)}"
                         " is not one: give --db sqlite:///PATH, or empty that database yourself")
    for suffix in ("", "-wal", "-shm"):
        Path(parsed.database + suffix).unlink(missing_ok=True)


def demo_banner(url: str, project: str, operator_key: str, options: DemoOptions, position: int, total: int) -> str:
    start = "from the first row" if position == 0 else f"continuing at row {position} (--reset starts over)"
    return "\n".join([
        "",
        f"  labelagent demo: streaming {total} SMS messages into project {project} at {options.rate:g}/s, {start}.",
        f"  Data: {ATTRIBUTION} (license: service/offline/demo/data/LICENSE-sms_spam.txt).",
        f"  SIMULATION: {options.reviewers} simulated reviewers ({SIMULATED_REVIEWER}-N) answer review tasks from the",
        f"  dataset's labels {options.review_delay:g} s after claiming them; pause them on either page to take over.",
        "",
        f"  Operator dashboard:  {url}/ui/operator",
        f"  Reviewer page:       {url}/ui/review",
        f"  Sign in with this operator key (a new one each start; revoked when the demo stops):\n"
        f"    export LABELAGENT_KEY={operator_key}",
        "",
    ])


def run_demo(settings: Settings, *, options: DemoOptions, host: str = "127.0.0.1", port: int = 8000,
             reset: bool = False, log_level: str = "info") -> int:
    """Serve the demo until SIGINT/SIGTERM. ``settings.database_url`` is the demo's database."""
    if reset:
        reset_database(settings.database_url)
    rows = load_rows()
    engine = engine_from_settings(settings)
    try:
        ensure_schema(engine)
        store = SqlStore(engine, settings)
        if options.project not in {p.name for p in store.projects.list_projects()}:
            store.projects.create_project(options.project, example_policy("sms_spam").model_copy(
                update={"project": options.project}), actor=ACTOR)
        position = sum(store.items.count_items(options.project).values())
        keys = {role: store.projects.create_key(name=f"demo: {name}", role=role, projects=[options.project])
                for role, name in (("operator", "operator"), ("ingest", "stream"), ("reviewer", SIMULATED_REVIEWER))}
        sim = Simulation(rows, options, ingest_key=keys["ingest"][0], reviewer_key=keys["reviewer"][0],
                         position=position)
        store.audit.log_event(options.project, "demo.started", actor=ACTOR, detail={
            "dataset": ATTRIBUTION, "position": sim.snapshot().position, "total": len(rows), "rate": options.rate,
            "simulated_reviewers": [f"{SIMULATED_REVIEWER}-{i + 1}" for i in range(options.reviewers)],
            "answers_from": "the dataset's labels", "review_delay_seconds": options.review_delay})
        hooks = ServeHooks(demo=sim, on_stopping=sim.stop, banner=lambda url: demo_banner(
            url, options.project, keys["operator"][0], options, sim.snapshot().position, len(rows)))
        try:
            return serve(settings, host=host, port=port, workers=1, demo=False, log_level=log_level,
                         on_started=sim.start, hooks=hooks)
        finally:
            sim.stop()
            store.audit.log_event(options.project, "demo.stopped", actor=ACTOR, detail={
                "position": sim.snapshot().position, "simulated_answers_this_run": sim.answered})
            for _, record in keys.values():
                store.projects.revoke_key(record.prefix)
    finally:
        engine.dispose()
