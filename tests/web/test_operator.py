"""The operator dashboard in Chromium: metrics, both plots and the tool table from a project with audits and
ground truth; stored backtests listed per version; a new policy version created, backtested (stored: still there
after a reload) and activated through the page, then rolled back; failed items listed with their reason and
re-queued."""

from __future__ import annotations

import json
import re
from datetime import timedelta
from pathlib import Path

from playwright.sync_api import expect

from service.store.tables import utcnow
from tests.factories import make_replay_summary
from tests.web.conftest import Live
from tests.web.seed import answer_all, seed_tasks
from tools.base import Item


def open_dashboard(page, live: Live, key: str) -> None:  # type: ignore[no-untyped-def]
    """The operator page, signed in with ``key``."""
    page.goto(f"{live.url}/ui/operator")
    page.locator("#api-key").fill(key)
    page.get_by_role("button", name="Sign in").click()


def test_an_operator_creates_backtests_and_activates_a_policy_version(
    live: Live,
    new_page,  # type: ignore[no-untyped-def]
    screenshots: Path,
) -> None:
    project = live.project("ops")
    # items 0-19 escalated, 20-44 audited (confidence 0.75-0.99; two suggestions wrong), 45-49 auto-labeled at 0.9
    actions = ["escalate"] * 20 + ["audit"] * 25 + ["accept"] * 5
    seeded = seed_tasks(live.store, project, actions, wrong=(3, 30, 41))
    assert answer_all(live.store, project, seeded.truth) == 45
    stored = [live.store.audit.record_backtest(project, policy_version=1, active_version=1, actor="earlier:op",
                                               limit=100,
                                         batch_size=10, seed=seed, ground_truth=45,
                                         candidate=make_replay_summary(45, 5 + seed), active=make_replay_summary(45, 5))
              for seed in (0, 1)]
    operator = live.key("operator", project)
    page, problems = new_page()
    open_dashboard(page, live, operator)

    expect(page.locator("#tile-active .value")).to_have_text("v1")
    expect(page.locator("#tile-precision")).to_contain_text("23/25 audits")
    expect(page.locator("#tile-queue .value")).to_have_text("0")
    expect(page.locator("#tile-auto .value")).to_have_text(re.compile(r"10\.0 %"))  # 5 auto of 50 decisions
    expect(page.locator("#tile-corrections .value")).to_have_text("0")
    expect(page.locator("#precision-chart path.line")).to_have_count(1)
    expect(page.locator("#precision-chart path.band")).to_have_count(1)
    expect(page.locator("#calibration-chart path.line")).to_have_count(2)  # precision and its lower bound
    marker = page.locator("#calibration-chart line.marker")
    expect(marker).to_have_count(1)  # the current threshold, 0.9
    with live.api(operator) as api:
        curve = api.get(f"/projects/{project}/metrics/calibration").json()
        tools = api.get(f"/projects/{project}/metrics/tools").json()
    assert curve["threshold"] == 0.9 and curve["records"] == 25
    at = max((p for p in curve["points"] if p["threshold"] >= 0.9), key=lambda p: p["coverage"])
    assert float(marker.get_attribute("data-x")) == at["coverage"]  # type: ignore[arg-type]
    expect(page.locator("#tools-table tbody tr")).to_have_count(3)
    assert tools["ground_truth"] == 45
    for tool in tools["tools"]:
        row = page.locator(f'#tools-table tr[data-tool="{tool["tool"]}"]')
        expect(row.locator("td").nth(1)).to_have_text(str(tool["votes"]))
    expect(page.locator("#audit-table tr[data-action='project.created']")).to_have_count(1)

    # v1's stored backtests: the latest in its row, all of them (newest first) in its list
    latest = page.locator('.backtest[data-version="1"]')
    expect(latest).to_have_attribute("data-backtest", str(stored[1].id))
    expect(latest).to_contain_text("45 items · auto 13.3 %")
    expect(latest).to_contain_text("earlier:op")
    page.locator('.backtest-history[data-version="1"] summary').click()
    entries = page.locator('.backtest-history[data-version="1"] .backtest-entry')
    expect(entries).to_have_count(2)
    assert [entries.nth(i).get_attribute("data-backtest") for i in range(2)] == [str(b.id) for b in stored[::-1]]
    expect(entries.nth(1)).to_contain_text("45 items · auto 11.1 %")

    # a new version: the active one with a lower target precision
    page.locator("#new-policy summary").click()
    policy = json.loads(page.locator("#policy-text").input_value())
    assert "version" not in policy and policy["target_precision"] == 0.95
    page.locator("#policy-text").fill(json.dumps(policy | {"target_precision": 0.9}, indent=2))
    page.locator("#policy-reason").fill("looser target for the weekend")
    page.locator("#create-policy").click()
    expect(page.locator('#policies tr[data-version="2"]')).to_be_visible()
    expect(page.locator("#notice")).to_contain_text("Created v2")

    page.locator('.backtest-btn[data-version="2"]').click()
    figures = page.locator('.backtest[data-version="2"]')
    expect(figures).to_contain_text("v2:", timeout=60_000)
    expect(figures).to_contain_text("active v1:")
    expect(figures).to_contain_text("ground-truth items available")
    expect(page.locator("#notice")).to_contain_text("done")
    expect(page.locator("#audit-table tr[data-action='policy.backtested']")).to_have_count(3)
    backtest_id = figures.get_attribute("data-backtest")
    page.reload()  # stored, not kept by the tab: the figures come back from the server
    expect(page.locator('.backtest[data-version="2"]')).to_have_attribute("data-backtest", backtest_id or "?")
    expect(page.locator('.backtest[data-version="2"]')).to_contain_text("active v1:")

    page.locator("#policy-reason").fill("backtest looks fine")
    page.locator('.activate-btn[data-version="2"]').click()
    expect(page.locator("#notice")).to_contain_text("v2 is now active.")
    expect(page.locator("#tile-active .value")).to_have_text("v2")
    activated = page.locator("#audit-table tr[data-action='policy.activated']")
    expect(activated).to_have_count(1)
    expect(activated).to_contain_text("backtest looks fine")
    page.screenshot(path=str(screenshots / "operator.png"), full_page=True)
    with live.api(operator) as api:
        assert api.get(f"/projects/{project}").json()["active_version"] == 2
        events = api.get(f"/projects/{project}/audit").json()["events"]
        assert [e["action"] for e in events] == ["project.created", "policy.backtested", "policy.backtested",
                                                 "policy.created", "policy.backtested", "policy.activated"]
        assert events[4]["detail"]["backtest_id"] == int(backtest_id or 0)
        assert api.get(f"/projects/{project}/backtests/{backtest_id}").json()["candidate"]["policy_version"] == 2
        assert events[-1]["detail"]["reason"] == "backtest looks fine"
        versions = api.get(f"/projects/{project}/policies").json()
        assert [(v["version"], v["active"], v["policy"]["target_precision"]) for v in versions] == [
            (1, False, 0.95),
            (2, True, 0.9),
        ]

    page.locator("#rollback").click()
    expect(page.locator("#tile-active .value")).to_have_text("v1")
    expect(page.locator("#audit-table tr[data-action='policy.rolled_back']")).to_have_count(1)
    with live.api(operator) as api:
        assert api.get(f"/projects/{project}").json()["active_version"] == 1
    problems.assert_clean()


def test_a_reviewer_key_cannot_use_the_dashboard(live: Live, new_page) -> None:  # type: ignore[no-untyped-def]
    project = live.project("nosy")
    page, problems = new_page()
    open_dashboard(page, live, live.key("reviewer", project))
    expect(page.locator("#notice")).to_contain_text("a key of role 'reviewer' may not call GET")
    problems.assert_clean(allow=("403",))


def test_an_operator_sees_failed_items_and_requeues_them(live: Live, new_page) -> None:  # type: ignore[no-untyped-def]
    project = live.project("failing")
    live.store.items.ingest(project, [Item(key=f"f{i}", text=f"text {i}") for i in range(3)])
    t0 = utcnow()
    for attempt in range(live.store.settings.max_attempts + 1):  # every claim's lease expires: the items fail
        live.store.items.claim_batch(project, worker="w", lease_seconds=1, now=t0 + timedelta(seconds=10 * attempt))
    assert live.store.items.count_items(project)["failed"] == 3
    page, problems = new_page()
    open_dashboard(page, live, live.key("operator", project))

    rows = page.locator("#failed-table tbody tr")
    expect(rows).to_have_count(3)
    assert [rows.nth(i).get_attribute("data-item") for i in range(3)] == ["f0", "f1", "f2"]
    expect(rows.nth(0)).to_contain_text("lease expired")
    page.locator("#requeue-failed").click()
    expect(page.locator("#notice")).to_contain_text("Re-queued 3 failed items.")
    expect(page.locator("#no-failed")).to_be_visible()
    expect(page.locator("#audit-table tr[data-action='items.requeued']")).to_have_count(1)
    assert live.store.items.count_items(project)["failed"] == 0
    problems.assert_clean()


def test_the_corrections_tile_counts_corrected_auto_labels(live: Live, new_page) -> None:  # type: ignore[no-untyped-def]
    project = live.project("fixed")
    seeded = seed_tasks(live.store, project, ["accept", "accept", "accept"])
    operator = live.key("operator", project)
    key = seeded.keys[1]
    current = live.store.items.item_view(project, key).label
    assert current is not None and current.source == "agent"
    other = "ham" if current.label == "spam" else "spam"
    with live.api(operator) as api:
        response = api.post(f"/projects/{project}/items/{key}/correction", json={"label": other, "reviewer": "ana"})
        assert response.status_code == 200, response.text
    page, problems = new_page()
    open_dashboard(page, live, operator)
    expect(page.locator("#tile-corrections .value")).to_have_text("1")
    expect(page.locator("#tile-corrections")).to_contain_text("1 of auto labels · 0 of human labels")
    expect(page.locator("#audit-table tr[data-action='label.corrected']")).to_have_count(1)
    problems.assert_clean()


def test_the_dashboard_shows_each_critical_labels_own_calibration(live: Live, new_page) -> None:  # type: ignore[no-untyped-def]
    project = live.project("critical", critical_labels=["spam"])
    seeded = seed_tasks(live.store, project, ["audit"] * 12 + ["accept"] * 2, wrong=(4,))
    assert answer_all(live.store, project, seeded.truth) == 12
    operator = live.key("operator", project)
    with live.api(operator) as api:
        (critical,) = api.get(f"/projects/{project}/metrics/calibration").json()["critical"]
    assert critical["label"] == "spam" and critical["records"] == sum(
        1 for k in seeded.keys[:12] if seeded.truth[k] == "spam") > 0
    page, problems = new_page()
    open_dashboard(page, live, operator)
    expect(page.locator(".critical-label")).to_have_text(
        f"Critical label spam: {critical['records']} calibration items, {critical['above_threshold']} at or above the "
        f"threshold ({critical['errors_above']} wrong); a threshold needs at least {critical['needed']} of them above "
        "it, error-free.")
    problems.assert_clean()


def test_the_dashboard_shows_tool_failures_only_once_there_are_some(live: Live, new_page) -> None:  # type: ignore[no-untyped-def]
    from tests.factories import make_batch_result

    project = live.project("outage")
    seed_tasks(live.store, project, ["accept", "escalate"])
    operator = live.key("operator", project)
    page, problems = new_page()
    open_dashboard(page, live, operator)
    expect(page.locator("#tile-corrections")).to_be_visible()
    expect(page.locator("#tile-tool-failures")).to_have_count(0)
    live.store.items.ingest(project, [Item(key=f"down-{i}", text=f"message {i}") for i in range(4)])
    policy = live.store.projects.active_policy(project)
    for _ in range(2):  # two graph runs in which the LLM's endpoint failed
        token, items = live.store.items.claim_batch(project, worker="w", size=2)
        result = make_batch_result(policy, items, ["escalate", "escalate"], threshold=0.9)
        result.tool_failures = {"llm": "llm failed: the model failed on every item (HTTP 503)"}
        live.store.items.record_batch(project, result, token, actor="worker-1")
    page.reload()  # still signed in
    expect(page.locator("#tile-tool-failures .value")).to_have_text("2")
    expect(page.locator("#tile-tool-failures")).to_contain_text("llm 2")
    expect(page.locator("#audit-table tr[data-action='tool.failed']")).to_have_count(2)
    problems.assert_clean()

