"""Browser tests: the app under uvicorn on a free loopback port (in a thread of this process, on a SQLite file),
driven by Debian's Chromium through Playwright. Each test makes its own project and keys scoped to it."""

from __future__ import annotations

import itertools
import os
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import uvicorn

from service.api.app import create_app
from service.offline.liveserver import free_port
from service.settings import Settings
from service.store import SqlStore
from service.store.db import create_all, make_engine
from tests.factories import make_policy

CHROMIUM = "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "screenshots"
_names = itertools.count()

sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is not installed (pip install -e '.[dev]')")


@dataclass
class Live:
    url: str
    store: SqlStore
    admin: str  # an operator key for every project

    def project(self, prefix: str = "web", **policy: object) -> str:
        """A new project, created through the API (so that the audit log has its entry)."""
        name = f"{prefix}-{next(_names)}"
        body = {"name": name, "policy": make_policy(name, **policy).model_dump(mode="json")}
        with self.api(self.admin) as api:
            r = api.post("/projects", json=body)
        assert r.status_code == 201, r.text
        return name

    def key(self, role: str, project: str) -> str:
        return self.store.projects.create_key(name=f"{role}-{project}", role=role, projects=[project])[0]

    def api(self, key: str) -> httpx.Client:
        return httpx.Client(base_url=self.url, headers={"X-API-Key": key}, timeout=30.0)


@pytest.fixture(scope="package")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    engine = make_engine(f"sqlite:///{tmp_path_factory.mktemp('web') / 'web.db'}")
    create_all(engine)
    store = SqlStore(engine, Settings(rate_limit_per_second=0))
    server = uvicorn.Server(
        uvicorn.Config(create_app(store=store), host="127.0.0.1", port=free_port(), log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, name="uvicorn", daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:  # a server starting up: nothing to wait on but its flag
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.02)
    try:
        yield Live(f"http://127.0.0.1:{server.config.port}", store, store.projects.create_key(name="admin",
                                                                                              role="operator")[0])
    finally:
        server.should_exit = True
        thread.join(10)
        engine.dispose()


@pytest.fixture(scope="package")
def browser() -> Iterator[object]:
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.skip(f"Chromium is not installed at {CHROMIUM} (make test installs it: apt-get install chromium)")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"],
        )
        yield browser
        browser.close()


class PageProblems:
    """Console errors, page errors, dialogs (an alert would mean injected script ran) and requests that left the
    app's origin, recorded for a page."""

    def __init__(self, page: object, origin: str) -> None:
        self.errors: list[str] = []
        self.dialogs: list[str] = []
        self.foreign: list[str] = []
        page.on("console", lambda m: self.errors.append(m.text) if m.type == "error" else None)  # type: ignore[attr-defined]
        page.on("pageerror", lambda e: self.errors.append(str(e)))  # type: ignore[attr-defined]
        page.on("dialog", lambda d: (self.dialogs.append(d.message), d.dismiss()))  # type: ignore[attr-defined]
        page.on(
            "request",
            lambda r: (
                None
                if r.url.startswith((origin, "blob:", "data:"))  # type: ignore[attr-defined]
                else self.foreign.append(r.url)
            ),
        )

    def assert_clean(self, allow: tuple[str, ...] = ()) -> None:
        errors = [e for e in self.errors if not any(a in e for a in allow)]
        assert not errors, errors
        assert not self.dialogs, self.dialogs
        assert not self.foreign, self.foreign


@pytest.fixture
def new_page(browser: object, live: Live) -> Iterator[object]:
    """``new_page()`` -> (page, problems) in a fresh browser context (its own sessionStorage)."""
    contexts = []

    def make() -> tuple[object, PageProblems]:
        context = browser.new_context(viewport={"width": 1280, "height": 900})  # type: ignore[attr-defined]
        context.set_default_timeout(15_000)
        contexts.append(context)
        page = context.new_page()
        return page, PageProblems(page, live.url)

    yield make
    for context in contexts:
        context.close()


@pytest.fixture(scope="session")
def screenshots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Where the tests save their screenshots: a temporary folder, or ``docs/screenshots`` (the README's) when
    ``LABELAGENT_UPDATE_SCREENSHOTS=1``, so a test run leaves the working tree as it found it."""
    if os.environ.get("LABELAGENT_UPDATE_SCREENSHOTS") == "1":
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        return SCREENSHOTS
    return tmp_path_factory.mktemp("screenshots")
