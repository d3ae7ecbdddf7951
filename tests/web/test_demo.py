"""``labelagent demo`` end to end in Chromium: started as a process on a temporary database (its stream sped up by
its options), the operator dashboard shows within 120 s an auto rate above zero, a realized precision with its
interval and a certified threshold, under the simulation's banner; then a person pauses the simulated reviewers on
the reviewer page, answers a task, and the API shows that answer as human ground truth under their name."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from playwright.sync_api import expect

from service.offline.demo.dataset import load_rows
from service.offline.liveserver import LiveDemo
from service.settings import Settings
from service.store import SqlStore
from service.store.db import make_engine
from service.store.migrate import upgrade
from tests.web.conftest import PageProblems

PROJECT = "sms_spam"
SEE_WITHIN_MS = 120_000
# Faster than the defaults (5 items/s, answers 1 s after a claim) so the test is short; options, not test code.
OPTIONS = ["--rate", "15", "--review-delay", "0.2", "--reviewers", "4", "--log-level", "WARNING"]


@pytest.fixture
def demo(tmp_path: Path) -> Iterator[tuple[LiveDemo, str, str]]:
    """The demo serving a fresh SQLite file; an operator key and a reviewer key ("ana") made beforehand."""
    url = f"sqlite:///{tmp_path / 'demo.db'}"
    engine = make_engine(url)
    upgrade(engine)
    store = SqlStore(engine, Settings(database_url=url))
    operator = store.projects.create_key(name="test operator", role="operator")[0]
    reviewer = store.projects.create_key(name="ana", role="reviewer")[0]
    engine.dispose()
    with LiveDemo(url, log=tmp_path / "demo.log", options=OPTIONS) as live:
        yield live, operator, reviewer


def new_page(browser, origin: str):  # type: ignore[no-untyped-def]
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(30_000)
    page = context.new_page()
    return page, PageProblems(page, origin)


def done_tasks(api: httpx.Client) -> list[dict[str, object]]:
    """Every done review task of the demo project (the operators' listing, page by page)."""
    tasks: list[dict[str, object]] = []
    while True:
        page = api.get(f"/projects/{PROJECT}/reviews", params={"status": "done", "limit": 500,
                                                               "offset": len(tasks)}).json()
        tasks += page["tasks"]
        if not page["tasks"] or len(tasks) >= page["total"]:
            return tasks


def test_the_demo_certifies_within_two_minutes_and_a_person_takes_over(
    demo: tuple[LiveDemo, str, str],
    browser,  # type: ignore[no-untyped-def]
    screenshots: Path,
) -> None:
    live, operator, reviewer = demo
    started = time.monotonic()
    page, problems = new_page(browser, live.url)
    page.goto(f"{live.url}/ui/operator")
    page.locator("#api-key").fill(operator)
    page.get_by_role("button", name="Sign in").click()
    expect(page.locator("#demo-banner")).to_contain_text("Simulation")
    expect(page.locator("#demo-banner")).to_contain_text("SMS Spam Collection")

    # the certificate: a threshold, auto labels, and the audits' realized precision with its interval
    expect(page.locator("#tile-active .sub")).to_have_text(re.compile(r"^threshold 0\.\d{3}$"), timeout=SEE_WITHIN_MS)
    expect(page.locator("#tile-auto .value")).to_have_text(re.compile(r"^(?!0\.0 %)\d+\.\d %$"),
                                                           timeout=SEE_WITHIN_MS)
    expect(page.locator("#tile-precision .value")).to_have_text(re.compile(r"^\d+\.\d %$"), timeout=SEE_WITHIN_MS)
    expect(page.locator("#tile-precision .sub")).to_have_text(
        re.compile(r"^[1-9]\d*/[1-9]\d* audits · 95 % CI \[\d+\.\d %, \d+\.\d %\]$"), timeout=SEE_WITHIN_MS)
    seen = time.monotonic() - started
    print(f"\ndemo: certificate, auto rate > 0 and realized precision seen {seen:.0f} s after the demo answered")
    assert seen < SEE_WITHIN_MS / 1000
    # auto labels keep flowing: a hundred of them before the README's picture of the demo in full swing
    expect(page.locator("#tile-auto .sub")).to_have_text(re.compile(r"^[1-9]\d{2,} agent · "), timeout=SEE_WITHIN_MS)
    page.screenshot(path=str(screenshots / "demo.png"))

    # a person takes over: pause the simulated reviewers, answer a task on the reviewer page
    truth = {r.key: r.label for r in load_rows()}
    person, person_problems = new_page(browser, live.url)
    person.goto(f"{live.url}/ui/review")
    person.locator("#api-key").fill(reviewer)
    person.locator("#reviewer-name").fill("ana")
    person.get_by_role("button", name="Sign in").click()
    expect(person.locator("#demo-banner")).to_have_attribute("data-paused", "false")
    person.locator("#demo-reviewer-toggle").click()
    expect(person.locator("#demo-banner")).to_have_attribute("data-paused", "true")
    expect(person.locator("#demo-banner")).to_contain_text("the review queue is yours")
    expect(person.locator("#task-view")).to_be_visible(timeout=60_000)  # the page re-checks an empty queue itself
    key = person.locator("#item-id").inner_text()
    task_id = person.locator("#task-view").get_attribute("data-task-id")
    person.locator(f'button.label[data-label="{truth[key]}"]').click()
    person.locator("#submit").click()
    expect(person.locator("#notice")).to_contain_text(f'Saved "{truth[key]}" for {key}')
    # the banner refreshes itself after a submit (and every 5 s): allow a loaded machine some slack
    expect(person.locator("#demo-banner")).to_contain_text("1 by people (ana 1)", timeout=30_000)
    person.screenshot(path=str(screenshots / "demo-review.png"))

    with httpx.Client(base_url=live.url, headers={"X-API-Key": operator}, timeout=30.0) as api:
        item = api.get(f"/projects/{PROJECT}/items/{key}").json()
        done = done_tasks(api)
        status = api.get(f"/projects/{PROJECT}/demo").json()
        audit = api.get(f"/projects/{PROJECT}/audit").json()["events"]
    assert (item["status"], item["label"], item["source"]) == ("labeled", truth[key], "human")
    assert [t["external_id"] for t in done if str(t["id"]) == task_id] == [key]
    assert status["reviewer_paused"] is True and status["human_answers"] == 1 and status["simulated_answers"] > 0
    assert status["answers_by_reviewer"]["ana"] == 1  # the person's answer, under their name
    assert set(status["answers_by_reviewer"]) - {"ana"} <= {f"simulated-reviewer-{i}" for i in range(1, 5)}
    actions = [(e["action"], e["actor"]) for e in audit]
    assert ("demo.started", "labelagent demo") in actions
    assert any(a == "demo.reviewer_paused" and actor.endswith(":ana") for a, actor in actions), actions
    problems.assert_clean()
    person_problems.assert_clean()
