"""The reviewer page in Chromium: a reviewer clears a queue with the keyboard alone; two reviewers work the same
queue at once and never get the same task; item text with HTML in it is shown as text; a lost lease says so."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path

from playwright.sync_api import Page, expect
from sqlalchemy import select

from service.store.base import review_t
from service.store.db import read_tx
from service.store.tables import utcnow
from tests.web.conftest import Live
from tests.web.seed import seed_tasks

N_TASKS = 20


def sign_in_with_keyboard(page: Page, live: Live, key: str, name: str) -> None:
    """Load the page and sign in by typing only: the key field has the focus, Tab goes to the name."""
    page.goto(f"{live.url}/ui/review")
    expect(page.locator("#api-key")).to_be_focused()
    page.keyboard.type(key)
    page.keyboard.press("Tab")
    page.keyboard.press("ControlOrMeta+a")
    page.keyboard.type(name)
    page.keyboard.press("Enter")


def current_task(page: Page) -> int | None:
    """Wait until the page shows a task or says the queue is empty; the task id (None when empty)."""
    page.locator("#task-view, #empty").first.wait_for()
    view = page.locator("#task-view")
    return int(view.get_attribute("data-task-id")) if view.count() else None  # type: ignore[arg-type]


def next_task(page: Page, previous: int) -> int | None:
    """Wait until the page moved past task ``previous``."""
    page.wait_for_function(
        "prev => { const v = document.querySelector('#task-view');"
        " return document.querySelector('#empty') || (v && v.dataset.taskId !== String(prev)); }",
        arg=previous,
    )
    return current_task(page)


def label_key(page: Page, label: str) -> str:
    """The digit shown next to ``label``."""
    return page.locator(f'button.label[data-label="{label}"] kbd').inner_text()


def test_a_reviewer_clears_twenty_tasks_with_the_keyboard_alone(live: Live, new_page, screenshots: Path) -> None:  # type: ignore[no-untyped-def]
    project = live.project("kbd")
    audits = {3, 9, 15}
    seeded = seed_tasks(
        live.store, project, ["audit" if i in audits else "escalate" for i in range(N_TASKS)], wrong=(1, 4)
    )
    reviewer = live.key("reviewer", project)
    page, problems = new_page()
    sign_in_with_keyboard(page, live, reviewer, "kim")

    seen: list[int] = []
    answered: dict[str, str] = {}
    task = current_task(page)
    while task is not None:
        seen.append(task)
        key = page.locator("#item-id").inner_text()
        truth = seeded.truth[key]
        kind = page.locator("#task-view").get_attribute("data-kind")
        assert kind == seeded.kinds[key]
        if kind == "audit":  # the agent's view is hidden
            expect(page.locator(".audit-note")).to_be_visible()
            assert page.locator("#suggestion, #votes, #neighbours").count() == 0
        else:
            expect(page.locator("#votes tbody tr")).to_have_count(3)
            expect(page.locator("#neighbours li")).to_have_count(3)
        expect(page.locator("#lease")).to_have_text(re.compile(r"lease \d+ min \d+ s left"))
        if len(seen) == 1:
            expect(page.locator("#suggestion")).to_have_text(truth)
            expect(page.locator("#labels kbd")).to_have_text(["1", "2"])
            page.keyboard.press(label_key(page, truth))
            expect(page.locator(f'button.label[data-label="{truth}"]')).to_have_class(re.compile("selected"))
        elif len(seen) == 2:  # an item with weather values, the agent wrong, the reviewer's choice made
            expect(page.locator("#weather")).to_contain_text("wx_wind_speed_10m")
            page.keyboard.press(label_key(page, truth))
            page.screenshot(path=str(screenshots / "reviewer.png"), full_page=True)
        else:
            page.keyboard.press(label_key(page, truth))
        page.keyboard.press("Enter")
        answered[key] = truth
        task = next_task(page, task)

    expect(page.locator("#empty")).to_contain_text("The queue is empty")
    assert len(seen) == N_TASKS == len(set(seen))
    with live.api(live.key("operator", project)) as api:
        assert api.get(f"/projects/{project}/reviews", params={"status": "open"}).json()["total"] == 0
        export = api.get(f"/projects/{project}/labels").text.splitlines()
        labels = {x["external_id"]: x for x in map(json.loads, export)}
        assert {k: v["label"] for k, v in labels.items()} == answered == seeded.truth
        assert {v["source"] for v in labels.values()} == {"human"}
        m = api.get(f"/projects/{project}/metrics").json()
        assert m["labels"] == {"agent": 0, "human": N_TASKS} and m["queue"]["done"] == N_TASKS
        assert m["precision"]["audits"] == len(audits)
    problems.assert_clean()


def test_two_reviewers_at_once_never_share_a_task(live: Live, new_page) -> None:  # type: ignore[no-untyped-def]
    project = live.project("pair")
    n = 30
    seed_tasks(live.store, project, ["escalate"] * n)
    reviewers = {"ann": new_page(), "ben": new_page()}
    for name, (page, _) in reviewers.items():
        sign_in_with_keyboard(page, live, live.key("reviewer", project), name)
    seen: dict[str, list[int]] = {name: [] for name in reviewers}
    current = {name: current_task(page) for name, (page, _) in reviewers.items()}
    while any(t is not None for t in current.values()):
        held = [t for t in current.values() if t is not None]
        assert len(held) == len(set(held)), f"both pages show task {held[0]}"
        for name, (page, _) in reviewers.items():  # both answer before either waits: the claims race
            if current[name] is not None:
                seen[name].append(current[name])  # type: ignore[arg-type]
                page.keyboard.press("1")
                page.keyboard.press("Enter")
        for name, (page, _) in reviewers.items():
            if current[name] is not None:
                current[name] = next_task(page, current[name])  # type: ignore[arg-type]
    ann, ben = set(seen["ann"]), set(seen["ben"])
    assert not ann & ben
    assert len(ann) + len(ben) == len(seen["ann"]) + len(seen["ben"]) == n
    assert min(len(ann), len(ben)) >= n // 3, seen  # both did a fair share: they really worked at the same time
    with read_tx(live.store.engine) as conn:
        rows = conn.execute(select(review_t.c.task_id, review_t.c.reviewer)).all()
    by_task = {t: r for t, r in rows if t in ann | ben}
    assert len(by_task) == n and len([1 for t, _ in rows if t in ann | ben]) == n  # one answer per task
    assert {t for t, r in by_task.items() if r == "ann"} == ann
    assert {t for t, r in by_task.items() if r == "ben"} == ben
    with live.api(live.key("operator", project)) as api:
        m = api.get(f"/projects/{project}/metrics").json()
        assert m["labels"]["human"] == n and m["queue"]["depth"] == 0
    for _, problems in reviewers.values():
        problems.assert_clean()


def test_html_in_an_item_is_shown_as_text(live: Live, new_page) -> None:  # type: ignore[no-untyped-def]
    project = live.project("xss")
    attack = "<img src=x onerror=alert(1)>"
    seed_tasks(
        live.store,
        project,
        ["escalate"],
        texts={0: attack},
        metadata={0: {"note": "<script>alert(2)</script>", "wx_temperature_2m": "<b>hot</b>"}},
    )
    page, problems = new_page()
    sign_in_with_keyboard(page, live, live.key("reviewer", project), "eve")
    current_task(page)
    expect(page.locator("#item-text")).to_have_text(attack)
    expect(page.locator("#metadata")).to_contain_text("<script>alert(2)</script>")
    expect(page.locator("#weather")).to_contain_text("<b>hot</b>")
    assert page.locator("#item img, #item script, #item b").count() == 0
    problems.assert_clean()  # no alert dialog, no request for "x"


def test_a_lost_lease_says_so_and_moves_on(live: Live, new_page) -> None:  # type: ignore[no-untyped-def]
    project = live.project("lease")
    seed_tasks(live.store, project, ["escalate", "escalate"])
    page, problems = new_page()
    sign_in_with_keyboard(page, live, live.key("reviewer", project), "lou")
    first = current_task(page)
    assert first is not None
    # an hour later the page's lease has expired and another reviewer claims the task
    thief = live.store.reviews.claim_review(project, reviewer="thief", now=utcnow() + timedelta(hours=1))
    assert thief is not None and thief.task_id == first
    page.keyboard.press("1")
    page.keyboard.press("Enter")
    expect(page.locator("#notice")).to_contain_text(f"Lease lost on task {first}")
    second = next_task(page, first)
    assert second is not None and second != first
    problems.assert_clean(allow=("409",))  # the browser logs the refused submit


MANY = ("ham", "spam", "billing", "delivery", "refund", "account", "card", "transfer", "pin", "limit", "fraud", "other")


def test_many_labels_filter_and_skip_from_the_keyboard(live: Live, new_page) -> None:  # type: ignore[no-untyped-def]
    project = live.project("many", labels=MANY)
    seeded = seed_tasks(live.store, project, ["escalate"] * 3)
    page, problems = new_page()
    sign_in_with_keyboard(page, live, live.key("reviewer", project), "max")
    first = current_task(page)
    assert first is not None
    buttons = page.locator("button.label")
    expect(buttons).to_have_count(12)
    expect(page.locator("#labels kbd")).to_have_text([*"123456789", "0"])  # labels 11 and 12: filter only
    skipped = page.locator("#item-id").inner_text()
    page.keyboard.press("s")
    expect(page.locator("#notice")).to_contain_text(f"Skipped {skipped}")
    second = next_task(page, first)
    assert second is not None

    filtered = page.locator("#item-id").inner_text()
    page.keyboard.press("/")
    expect(page.locator("#label-filter")).to_be_focused()
    page.keyboard.type("fra")
    expect(buttons).to_have_count(1)
    expect(buttons).to_have_attribute("data-label", "fraud")
    page.keyboard.press("Enter")
    third = next_task(page, second)
    assert third is not None

    tenth = page.locator("#item-id").inner_text()
    expect(page.locator("#label-filter")).to_have_value("")  # a new task: the filter is empty, digits choose again
    page.keyboard.press("0")
    expect(page.locator('button.label[data-label="limit"]')).to_have_class(re.compile("selected"))
    page.keyboard.press("Enter")
    assert next_task(page, third) is None  # the skipped task is not offered to this reviewer again soon

    with live.api(live.key("operator", project)) as api:
        export = {
            x["external_id"]: x["label"]
            for x in map(json.loads, api.get(f"/projects/{project}/labels").text.splitlines())
        }
        assert export == {filtered: "fraud", tenth: "limit"}
        still = api.get(f"/projects/{project}/reviews", params={"status": "open"}).json()
        assert [t["external_id"] for t in still["tasks"]] == [skipped]
    assert set(seeded.keys) == {skipped, filtered, tenth}
    problems.assert_clean()


def test_heartbeats_keep_the_lease_past_its_first_expiry(live: Live, new_page) -> None:  # type: ignore[no-untyped-def]
    project = live.project("beat", lease_seconds=6)  # a heartbeat when 2 s are left
    seeded = seed_tasks(live.store, project, ["escalate"])
    page, problems = new_page()
    sign_in_with_keyboard(page, live, live.key("reviewer", project), "hal")
    first = current_task(page)
    assert first is not None
    lease = page.locator("#lease")
    expires = int(lease.get_attribute("data-expires"))  # type: ignore[arg-type]
    page.wait_for_function("t => Number(document.querySelector('#lease').dataset.expires) > t", arg=expires)
    page.wait_for_function("t => Date.now() > t + 1000", arg=expires)  # the first lease would be over by now
    expect(lease).to_have_text(re.compile(r"lease \d+ s left"))
    page.keyboard.press("2")
    page.keyboard.press("Enter")
    expect(page.locator("#notice")).to_contain_text(f'Saved "spam" for {seeded.keys[0]}')
    assert next_task(page, first) is None
    problems.assert_clean()
