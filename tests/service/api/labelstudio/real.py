"""A real Label Studio for the contract test: ``label-studio==1.23.2`` from PyPI in its own virtualenv (cached
between runs under ``~/.cache/labelagent``, or ``LABELAGENT_LABEL_STUDIO_HOME``), started on a free loopback port
with a temporary data directory (SQLite) and driven over its REST API with a legacy token.

The virtualenv is created on first use (minutes; a lock keeps two runs from building it at once; a marker file
says it is complete). Label Studio's first start migrates its database; the migrated database (with the test user
and its token) is kept next to the virtualenv and copied into each run's data directory, so later starts only
check the migrations.

Label Studio side settings the bridge needs (README, "Label Studio"): ``ML_BLOCK_LOCAL_IP=false`` and
``SSRF_PROTECTION_ENABLED=false`` (labelagent listens on a loopback or private address), ``WEBHOOK_TIMEOUT``
above Label Studio's 1 s default (a webhook is answered after its database write). The rest turns off what would
reach the network (the PyPI version check, analytics, Sentry).
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx

VERSION = "1.23.2"
EMAIL = "contract@labelagent.test"
PASSWORD = "contract-password-1"
TOKEN = "labelagent0contract0token0000000000000000"  # Label Studio's legacy token: 40 characters
START_SECONDS = 900.0  # a first start migrates Label Studio's database: minutes on a loaded 2-core machine
T = TypeVar("T")


def home() -> Path:
    default = Path.home() / ".cache" / "labelagent" / f"label-studio-{VERSION}"
    return Path(os.environ.get("LABELAGENT_LABEL_STUDIO_HOME", default))


@contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ensure_virtualenv() -> Path:
    """The Python of the cached Label Studio virtualenv, created (pip install from PyPI) when missing."""
    venv = home()
    marker = venv / ".complete"
    python = venv / "bin" / "python"
    with _locked(venv.parent / f"{venv.name}.lock"):
        if marker.exists() and python.exists():
            return python
        shutil.rmtree(venv, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, capture_output=True, timeout=600)
        done = subprocess.run([str(python), "-m", "pip", "install", "-q", f"label-studio=={VERSION}"],
                              capture_output=True, text=True, timeout=3600)
        if done.returncode != 0:
            raise RuntimeError(f"pip install label-studio=={VERSION} failed: {done.stderr[-2000:]}")
        marker.write_text(VERSION)
    return python


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def environment(data: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LABELAGENT_", "DJANGO_", "LABEL_STUDIO_"))}
    env.update({
        "ML_BLOCK_LOCAL_IP": "false",
        "SSRF_PROTECTION_ENABLED": "false",
        "WEBHOOK_TIMEOUT": "60",
        "LATEST_VERSION_CHECK": "false",
        "COLLECT_ANALYTICS": "false",
        "SENTRY_DSN": "",
        "FRONTEND_SENTRY_DSN": "",
        "LABEL_STUDIO_BASE_DATA_DIR": str(data),
        "LOG_LEVEL": "WARNING",
    })
    return env


class LabelStudio:
    """A running Label Studio: ``api`` is an httpx client with its token; ``version`` is what it reports."""

    def __init__(self, url: str, process: subprocess.Popen[bytes], log: Path) -> None:
        self.url = url
        self.process = process
        self.log = log
        self.api = httpx.Client(base_url=url, headers={"Authorization": f"Token {TOKEN}"}, timeout=300)
        self.version = ""

    def call(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self.api.request(method, path, **kwargs)
        assert response.status_code < 300, f"{method} {path}: {response.status_code} {response.text[:2000]}"
        return response.json() if response.content else None

    def log_tail(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log.exists() else ""


def _template(venv: Path) -> Path:
    return venv / "template" / "label_studio.sqlite3"


def start(python: Path, data: Path) -> LabelStudio:
    """Label Studio on a free loopback port over ``data`` (the cached migrated database copied in first)."""
    data.mkdir(parents=True, exist_ok=True)
    template = _template(python.parent.parent)
    if template.exists():
        shutil.copy(template, data / "label_studio.sqlite3")
    port = free_port()
    log = data / "label-studio.log"
    command = [str(python), "-m", "label_studio.server", "start", "--no-browser", "--internal-host", "127.0.0.1",
               "--port", str(port), "--data-dir", str(data), "--username", EMAIL, "--password", PASSWORD,
               "--user-token", TOKEN, "--enable-legacy-api-token", "--log-level", "WARNING"]
    with log.open("wb") as out:
        process = subprocess.Popen(command, cwd=data, env=environment(data), stdout=out, stderr=subprocess.STDOUT)
    ls = LabelStudio(f"http://127.0.0.1:{port}", process, log)
    deadline = time.monotonic() + START_SECONDS
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"Label Studio exited with {process.returncode}: {ls.log_tail()}")
        try:
            response = ls.api.get("/api/version", timeout=10)
            if response.status_code == 200:
                ls.version = str(response.json().get("release") or json.dumps(response.json())[:200])
                break
        except httpx.TransportError:
            pass
        if time.monotonic() > deadline:
            stop(ls)
            raise RuntimeError(f"Label Studio did not answer within {START_SECONDS:.0f} s: {ls.log_tail()}")
        time.sleep(1)
    if not template.exists():  # keep the migrated database for the next runs
        template.parent.mkdir(exist_ok=True)
        partial = template.with_suffix(".partial")
        with sqlite3.connect(data / "label_studio.sqlite3") as src, sqlite3.connect(partial) as dst:
            src.backup(dst)
        partial.replace(template)
    return ls


def stop(ls: LabelStudio) -> None:
    ls.api.close()
    ls.process.terminate()
    try:
        ls.process.wait(30)
    except subprocess.TimeoutExpired:
        ls.process.kill()
        ls.process.wait(30)


def eventually(check: Callable[[], T | None], *, seconds: float = 120.0, what: str) -> T:
    """Poll ``check`` until it returns something other than None (Label Studio works in its own process)."""
    deadline = time.monotonic() + seconds
    while True:
        value = check()
        if value is not None:
            return value
        assert time.monotonic() < deadline, f"{what}: not within {seconds:.0f} s"
        time.sleep(0.5)
