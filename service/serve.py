"""``labelagent serve`` (the HTTP API plus workers) and ``labelagent worker`` (workers alone).

``serve`` runs the FastAPI app with uvicorn and a :class:`~service.runtime.WorkerRuntime` in a thread of the same
process (its own event loop, so graph runs never stall the HTTP loop's scheduling); the app tells the runtime
about new answers through the ``FeedbackSink`` protocol. ``--workers N`` adds N-1 ``labelagent worker``
processes on the same database. On an empty database it creates the demo project ``sms_spam``.

``worker`` runs one runtime (and optionally a broker consumer: Redis, NATS JetStream or RabbitMQ, see
service/runtime/sources) until SIGTERM/SIGINT: the first signal lets the current batch finish (at most
``stop_grace_seconds``, then it is released), a second one releases it at once.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import uvicorn
from sqlalchemy import Engine

from policies import example_policy
from service.offline.demo.control import DemoControl
from service.runtime import RuntimeStats, ToolsFactory, WorkerRuntime
from service.runtime.feedback import FeedbackSink, NullSink
from service.settings import Settings
from service.store import SqlStore
from service.store.db import database_advice, engine_from_settings, is_transient
from service.store.migrate import ensure_schema, require_schema

log = logging.getLogger("labelagent.serve")

DEMO_PROJECT = "sms_spam"
# The API's young objects are collected every 10,000 net allocations instead of 700, and the full collections
# (every 10 * 10 young ones) only walk what was allocated after startup (see tune_gc).
GC_THRESHOLDS = (10_000, 10, 10)


def default_name(prefix: str = "worker") -> str:
    return f"{prefix}-{socket.gethostname()}-{os.getpid()}"


def setup_logging(level: str = "INFO") -> None:
    logging.basicConfig(level=level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def tune_gc() -> None:
    """Once the server is up: freeze what startup allocated (the imported libraries, the app: ~1M objects that
    live as long as the process) so that the collector never walks it again, and collect less often. A full
    collection over that heap paused every request in flight for 150-200 ms under load."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


# --- labelagent worker ---------------------------------------------------------------------------------------


def run_worker(settings: Settings, *, projects: Sequence[str] | None = None, source: str | None = None,
               name: str | None = None, tools_factory: ToolsFactory | None = None,
               batch_size: int | None = None, report: Callable[[RuntimeStats], None] | None = None) -> int:
    """Run a worker (and a broker consumer when ``source`` is given) until a signal stops it."""
    if source is not None:
        from service.runtime.sources import check_source

        check_source(source)  # a wrong URL fails at once (exit code 2), before waiting for the database
    engine = engine_from_settings(settings)
    try:
        _wait_for_database(engine)
        _advise(engine)
        store = SqlStore(engine, settings)
        runtime = WorkerRuntime(store, settings, name=name or default_name(), projects=projects,
                                tools_factory=tools_factory, batch_size=batch_size)
        asyncio.run(_worker_main(runtime, store, settings, source))
        if report is not None:
            report(runtime.stats)
    finally:
        engine.dispose()
    return 0


def _advise(engine: Engine) -> None:
    for advice in database_advice(engine):
        log.warning("%s", advice)


def _wait_for_database(engine: Engine, timeout: float = 120.0) -> None:
    """Check the schema, retrying while the database cannot be reached (a worker started while PostgreSQL
    restarts waits for it, as running workers do, instead of exiting)."""
    deadline = time.monotonic() + timeout
    delay = 0.2
    while True:
        try:
            require_schema(engine)
            return
        except Exception as exc:
            if not is_transient(exc) or time.monotonic() + delay > deadline:
                raise
            log.warning("database unreachable (%s); retrying in %.1fs", getattr(exc, "orig", exc), delay)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)


async def _worker_main(runtime: WorkerRuntime, store: SqlStore, settings: Settings, source: str | None) -> None:
    loop = asyncio.get_running_loop()

    def on_signal() -> None:
        if runtime.stopping:
            log.warning("second signal: releasing the batch in progress")
            runtime.abort()
            return
        log.info("stopping: finishing the batch in progress (at most %.0fs)", settings.stop_grace_seconds)
        runtime.stop()
        loop.call_later(settings.stop_grace_seconds, runtime.abort)

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal)
    stream, consumer = None, None
    if source is not None:
        from service.runtime.sources import broker_of, open_source

        stream = open_source(source, store, sink=runtime)
        consumer = asyncio.create_task(stream.run(lambda: runtime.stopping), name=f"{broker_of(source)}-source")
    worker = asyncio.create_task(runtime.run(), name="runtime")
    try:
        await worker
    except asyncio.CancelledError:
        if not worker.cancelled():
            raise
    finally:
        runtime.stop()
        if stream is not None and consumer is not None:
            await consumer  # returns within one blocking read once the runtime is stopping
            await stream.close()


# --- labelagent serve ----------------------------------------------------------------------------------------


@contextmanager
def _signals_interrupt() -> Iterator[None]:
    """SIGTERM and SIGINT raise KeyboardInterrupt while serving, so the workers are stopped on the way out.

    uvicorn handles both signals itself while it runs and re-raises them to the previous handler after its
    shutdown; with the default SIGTERM handler that would end the process before the workers are stopped."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@dataclass(frozen=True, slots=True)
class ServeHooks:
    """What a caller adds to :func:`serve` (``labelagent demo``): a demo for the app's ``/projects/{p}/demo``,
    lines printed after the banner (given the URL), and a call made, in a thread, when the server begins to
    shut down while it still answers (the demo's clients give their tasks back)."""

    demo: DemoControl | None = None
    banner: Callable[[str], str] | None = None
    on_stopping: Callable[[], None] | None = None


class _Server(uvicorn.Server):
    """uvicorn's server, calling ``on_started`` once it listens (so the URL is printed only when it is true), and
    ``on_stopping`` before it shuts down."""

    def __init__(self, config: uvicorn.Config, on_started: Callable[[], None],
                 on_stopping: Callable[[], None] | None = None) -> None:
        super().__init__(config)
        self.on_started = on_started
        self.on_stopping = on_stopping

    async def startup(self, sockets: Any = None) -> None:
        await super().startup(sockets=sockets)
        if self.started:
            self.on_started()

    async def shutdown(self, sockets: Any = None) -> None:
        if self.on_stopping is not None:
            await asyncio.to_thread(self.on_stopping)  # the loop keeps serving the requests it makes meanwhile
        await super().shutdown(sockets=sockets)


class WorkerThread:
    """A :class:`WorkerRuntime` on its own event loop in a daemon thread."""

    def __init__(self, runtime: WorkerRuntime) -> None:
        self.runtime = runtime
        self.thread = threading.Thread(target=self._main, name=runtime.name, daemon=True)

    def _main(self) -> None:
        try:
            asyncio.run(self.runtime.run())
        except asyncio.CancelledError:
            log.info("worker %s aborted; its batch was released", self.runtime.name)
        except Exception:
            log.exception("worker %s crashed", self.runtime.name)

    def start(self) -> None:
        self.thread.start()

    def stop(self, grace: float) -> None:
        self.runtime.stop()
        self.thread.join(grace)
        if self.thread.is_alive():
            self.runtime.abort()
            self.thread.join(10)


def bootstrap_demo(store: SqlStore) -> bool:
    """Create the demo project on an empty database; True when it did."""
    if store.projects.list_projects():
        return False
    store.projects.create_project(DEMO_PROJECT, example_policy(DEMO_PROJECT))
    return True


def bootstrap_key(store: SqlStore) -> str | None:
    """On a database without API keys, create an operator key for every project and return it (printed once)."""
    if store.projects.count_keys():
        return None
    key, _ = store.projects.create_key(name="first operator (labelagent serve)", role="operator")
    return key


def banner(url: str, database: str, projects: Sequence[str], workers: int) -> str:
    project = DEMO_PROJECT if DEMO_PROJECT in projects or not projects else projects[0]
    item = '{"items": [{"external_id": "msg-1", "data": {"text": "WINNER! Claim your free prize, txt WIN to 80086"}}]}'
    return "\n".join([
        f"labelagent is serving {url}  (database {database}; {workers} worker(s); projects: "
        f"{', '.join(projects) or 'none yet'})",
        f"  API docs (try every route):  {url}/docs",
        "  Ingest an item:",
        f"    curl -s -X POST {url}/projects/{project}/items -H \"Authorization: Bearer $LABELAGENT_KEY\" \\",
        "         -H 'content-type: application/json' \\",
        f"         -d '{item}'",
        f"  Its status and label:        curl -s -H \"X-API-Key: $LABELAGENT_KEY\" "
        f"{url}/projects/{project}/items/msg-1",
        "  Review the escalated items:",
        f"    curl -s -X POST {url}/projects/{project}/reviews/claim -H \"X-API-Key: $LABELAGENT_KEY\" "
        "-H 'content-type: application/json' "
        "-d '{\"reviewer\": \"me\"}'",
        f"  Metrics:                     curl -s -H \"X-API-Key: $LABELAGENT_KEY\" {url}/projects/{project}/metrics",
        "  (new items start in review: the agent auto-labels once humans have answered enough of them)",
    ])


def _announce(text: str, first_key: str | None, extra: str | None) -> None:
    """Print the banner, the first operator key (once), and the caller's lines."""
    print(text, flush=True)
    if first_key is not None:
        print(f"\n  Operator API key (shown once, store it now; `labelagent keys create` makes more):\n"
              f"    export LABELAGENT_KEY={first_key}\n", flush=True)
    if extra is not None:
        print(extra, flush=True)


def _create_app(settings: Settings, store: SqlStore, feedback: FeedbackSink, demo: DemoControl | None) -> Any:
    from service.api.app import create_app  # the HTTP layer is imported only by serve

    return create_app(settings, store=store, feedback=feedback, demo=demo)


def serve(settings: Settings, *, host: str = "127.0.0.1", port: int = 8000, workers: int = 1, demo: bool = True,
          tools_factory: ToolsFactory | None = None, on_started: Callable[[str], None] | None = None,
          log_level: str = "info", hooks: ServeHooks = ServeHooks()) -> int:
    """Run the API and ``workers`` workers (one in this process, the rest as ``labelagent worker`` processes).
    ``log_level`` is uvicorn's too: below ``info`` there is no access log."""
    engine = engine_from_settings(settings)
    helpers: list[subprocess.Popen[bytes]] = []
    thread: WorkerThread | None = None
    try:
        done = ensure_schema(engine)
        if done != "current":
            log.info("database schema %s", done)
        _advise(engine)
        store = SqlStore(engine, settings)
        if demo and bootstrap_demo(store):
            log.info("created the demo project %s (policy %s)", DEMO_PROJECT, example_policy(DEMO_PROJECT).key)
        first_key = bootstrap_key(store)
        runtime: WorkerRuntime | None = None
        if workers > 0:
            runtime = WorkerRuntime(store, settings, name=default_name("serve"), tools_factory=tools_factory)
            thread = WorkerThread(runtime)
        app = _create_app(settings, store, runtime if runtime is not None else NullSink(), hooks.demo)
        url = f"http://{host}:{port}"
        projects = [p.name for p in store.projects.list_projects()]
        database = engine.url.render_as_string(hide_password=True)

        def started() -> None:
            tune_gc()
            if on_started is not None:
                on_started(url)
            _announce(banner(url, database, projects, workers), first_key,
                      hooks.banner(url) if hooks.banner is not None else None)

        server = _Server(uvicorn.Config(app, host=host, port=port, log_level=log_level.lower()), started,
                         hooks.on_stopping)
        if thread is not None:
            thread.start()
        env = {**os.environ, "LABELAGENT_DATABASE_URL": engine.url.render_as_string(hide_password=False)}
        for i in range(1, workers):
            helpers.append(subprocess.Popen([sys.executable, "-m", "service.cli", "worker",
                                             "--name", f"{default_name('serve')}-{i}"], env=env))
        with _signals_interrupt():
            try:
                server.run()
            except KeyboardInterrupt:
                log.info("interrupted")
        return 0 if server.started else 1
    finally:
        for proc in helpers:
            proc.send_signal(signal.SIGTERM)
        if thread is not None:
            thread.stop(settings.stop_grace_seconds)
        for proc in helpers:
            try:
                proc.wait(settings.stop_grace_seconds + 10)
            except subprocess.TimeoutExpired:
                proc.kill()
        engine.dispose()
