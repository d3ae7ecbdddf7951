"""``labelagent serve`` and ``labelagent worker`` as child processes on loopback, for end-to-end tests and benchmarks.

:class:`LiveService` starts ``python -m service.cli serve`` on a free port of 127.0.0.1 against a database URL and
waits until ``/health`` answers (polling with a deadline, and failing at once if the process exits);
:class:`WorkerProcess` starts a ``labelagent worker``. Both stop with SIGTERM (the workers finish their batch), and
report their peak resident memory (``VmHWM`` from ``/proc``, Linux) and CPU time while they run. Output goes to
log files.

The database must exist with its schema and API keys beforehand (``service.store.migrate.upgrade`` or
``service.store.db.create_all``, and ``store.projects.create_key``): ``serve`` prints a key only on a database
without one.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType

import httpx

# Settings for short end-to-end runs: workers notice new projects and answers within a tenth of a second, and the
# per-key rate limit (a policy against runaway clients, not a capacity) is off.
FAST_ENV: dict[str, str] = {
    "LABELAGENT_WORKER_POLL_SECONDS": "0.1",
    "LABELAGENT_FEEDBACK_POLL_SECONDS": "0.1",
    "LABELAGENT_REFRESH_SECONDS": "0.2",
    "LABELAGENT_RATE_LIMIT_PER_SECOND": "0",
    "LABELAGENT_STOP_GRACE_SECONDS": "10",
}


def free_port(host: str = "127.0.0.1") -> int:
    """A port nobody listens on now (another process may take it before the server binds: :class:`LiveService`
    retries on another port when the server exits at start)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def peak_rss_bytes(pid: int) -> int | None:
    """Peak resident set size of a live process (``VmHWM``), None when unknown (gone, or not Linux)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    for line in text.splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    return None


def cpu_seconds(pid: int) -> float | None:
    """User plus system CPU time a live process has used so far (all its threads), None when unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")  # utime, stime (fields 14, 15)


class _Child:
    def __init__(self, args: Sequence[str], *, env: Mapping[str, str], log: Path) -> None:
        self.args = list(args)
        self.env = dict(env)
        self.log_path = log
        self.proc: subprocess.Popen[bytes] | None = None

    def _spawn(self) -> subprocess.Popen[bytes]:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("ab") as out:
            self.proc = subprocess.Popen(self.args, env=self.env, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL)
        return self.proc

    @property
    def pid(self) -> int:
        assert self.proc is not None, "not started"
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def peak_rss(self) -> int | None:
        return peak_rss_bytes(self.pid) if self.alive() else None

    def cpu_seconds(self) -> float | None:
        return cpu_seconds(self.pid) if self.alive() else None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, timeout: float = 30.0) -> int | None:
        """SIGTERM, then SIGKILL after ``timeout``; the exit code (None if never started)."""
        proc = self.proc
        if proc is None:
            return None
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(10)
        return proc.returncode


def _env(database_url: str, extra: Mapping[str, str] | None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LABELAGENT_")}
    env.update(FAST_ENV)
    env.update(extra or {})
    env["LABELAGENT_DATABASE_URL"] = database_url
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


class LiveService(_Child):
    """``labelagent serve`` (the API, plus ``workers`` in-process/child workers; 0: the API alone)."""

    def __init__(self, database_url: str, *, log: Path, workers: int = 1, env: Mapping[str, str] | None = None,
                 host: str = "127.0.0.1") -> None:
        super().__init__([], env=_env(database_url, env), log=log)
        self.host = host
        self.workers = workers
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def start(self, *, timeout: float = 90.0, attempts: int = 3) -> LiveService:
        """Start and wait for ``/health``; a server that exits at start (e.g. its port was taken) is retried."""
        for attempt in range(attempts):
            self.port = free_port(self.host)
            self.args = self.command()
            self._spawn()
            if self._wait_healthy(timeout):
                return self
            if attempt + 1 == attempts or self.alive():
                break
        self.stop(10)
        raise RuntimeError(f"labelagent serve did not answer {self.url}/health within {timeout:.0f}s "
                           f"(exit code {self.proc.returncode if self.proc else None}); its log:\n{self.log_tail()}")

    def command(self) -> list[str]:
        """The command line, for :attr:`port`."""
        worker_args = ["--workers", str(self.workers)] if self.workers > 0 else ["--no-worker"]
        return [sys.executable, "-m", "service.cli", "serve", "--host", self.host, "--port", str(self.port),
                "--no-demo", "--log-level", "WARNING", *worker_args]

    def _wait_healthy(self, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=2.0) as client:
            while time.monotonic() < deadline:
                if not self.alive():
                    return False
                try:
                    if client.get(f"{self.url}/health").status_code == 200:
                        return True
                except httpx.HTTPError:
                    pass
                time.sleep(0.05)  # a server starting up: nothing to wait on but the socket
        return False

    def __enter__(self) -> LiveService:
        return self if self.alive() else self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()


class LiveDemo(LiveService):
    """``labelagent demo`` with ``options`` (``--rate``, ``--review-delay``, ...) on ``database_url``."""

    def __init__(self, database_url: str, *, log: Path, options: Sequence[str] = (),
                 env: Mapping[str, str] | None = None, host: str = "127.0.0.1") -> None:
        super().__init__(database_url, log=log, env=env, host=host)
        self.options = list(options)

    def command(self) -> list[str]:
        return [sys.executable, "-m", "service.cli", "demo", "--db", self.env["LABELAGENT_DATABASE_URL"],
                "--host", self.host, "--port", str(self.port), *self.options]


class WorkerProcess(_Child):
    """``labelagent worker`` against ``database_url``."""

    def __init__(self, database_url: str, *, name: str, log: Path, env: Mapping[str, str] | None = None) -> None:
        super().__init__([sys.executable, "-m", "service.cli", "worker", "--name", name, "--log-level", "INFO"],
                         env=_env(database_url, env), log=log)
        self.name = name

    def start(self) -> WorkerProcess:
        self._spawn()
        return self

    def serving(self, project: str) -> bool:
        """True once the worker logged that it serves ``project`` (its labeler loaded)."""
        try:
            return f"serving {project} with" in self.log_path.read_text(errors="replace")
        except OSError:
            return False
