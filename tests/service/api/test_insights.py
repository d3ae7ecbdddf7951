"""The dashboard's data routes: ``/projects/{p}/metrics/calibration`` (precision versus coverage of the calibration
sample), ``/metrics/precision`` (realized precision from audits over time) and ``/metrics/tools`` (each tool's calls,
cost, accuracy and pooled weight), checked against numbers worked out by hand from what the test put in the store."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from agent.calibration import cp_interval, cp_upper, min_sample_size
from agent.certificate import fewest_to_certify
from service.store import ReviewAnswer, SqlStore
from tests.factories import make_policy
from tests.service.api.conftest import decide, error_message


def answer(store: SqlStore, project: str, truth: dict[str, str]) -> None:
    """Claim every open task one at a time, answering from ``truth`` (by item key)."""
    while (task := store.reviews.claim_review(project, reviewer="alice")) is not None:
        store.reviews.submit_reviews([ReviewAnswer(task.task_id, task.token, truth[task.item.key])], project=project)


def test_calibration_curve_and_precision_history_from_four_audits(
    client: TestClient, store: SqlStore, project: str
) -> None:
    # make_batch_result: item i has confidence 0.5 + i/100 and suggestion ham, spam, ham, spam (i = 0..3)
    keys = decide(store, project, ["audit", "audit", "audit", "audit", "accept"], threshold=0.52)
    answer(store, project, {keys[0]: "ham", keys[1]: "ham", keys[2]: "ham", keys[3]: "spam"})  # item 1 was wrong

    curve = client.get(f"/projects/{project}/metrics/calibration")
    assert curve.status_code == 200, curve.text
    c = curve.json()
    assert (c["records"], c["threshold"], c["target_precision"]) == (4, 0.52, 0.95)
    got = [x for p in c["points"] for x in (p["threshold"], p["coverage"], p["precision"], p["n"])]
    # by confidence, highest first: 0.53 right, 0.52 right, 0.51 wrong, 0.50 right
    assert got == pytest.approx([0.53, 0.25, 1.0, 1, 0.52, 0.5, 1.0, 2, 0.51, 0.75, 2 / 3, 3, 0.50, 1.0, 0.75, 4])
    errors = [0, 0, 1, 1]
    assert [p["precision_low"] for p in c["points"]] == pytest.approx(
        [1 - float(cp_upper(e, n, c["delta"])) for e, n in zip(errors, [1, 2, 3, 4], strict=True)]
    )

    history = client.get(f"/projects/{project}/metrics/precision").json()
    points = history["points"]
    assert [p["audits"] for p in points] == [1, 2, 3, 4]
    assert points[-1]["correct"] == 3 and points[-1]["estimate"] == 0.75
    assert (points[-1]["ci_low"], points[-1]["ci_high"]) == pytest.approx(cp_interval(3, 4, history["level"]))
    steps = [b["correct"] - a["correct"] for a, b in zip([{"correct": 0}, *points], points, strict=False)]
    assert sorted(steps) == [0, 1, 1, 1]  # one wrong audit among four, in settlement order
    assert [p["at"] for p in points] == sorted(p["at"] for p in points)


def test_an_empty_project_has_empty_curves(client: TestClient, project: str) -> None:
    c = client.get(f"/projects/{project}/metrics/calibration").json()
    assert (c["records"], c["points"], c["threshold"]) == (0, [], None)
    assert client.get(f"/projects/{project}/metrics/precision").json()["points"] == []
    t = client.get(f"/projects/{project}/metrics/tools").json()
    assert (t["ground_truth"], t["tools"]) == (0, [])


def test_tool_report_counts_calls_cost_accuracy_and_weights(client: TestClient, store: SqlStore, project: str) -> None:
    # 40 escalations; item i's votes favour ham (even i) or spam (odd i); "rules" abstains on odd i (cost 0.1,
    # else 1.0). Every human answer is ham: rules is always right when it votes, the others half of the time.
    keys = decide(store, project, ["escalate"] * 40)
    before = client.get(f"/projects/{project}/metrics/tools").json()
    assert before["ground_truth"] == 0 and {t["accuracy"] for t in before["tools"]} == {None}
    answer(store, project, dict.fromkeys(keys, "ham"))
    r = client.get(f"/projects/{project}/metrics/tools")  # the answers change it (not a cached report)
    assert r.status_code == 200, r.text
    report = r.json()
    assert report["ground_truth"] == 40
    tools = {t["tool"]: t for t in report["tools"]}
    assert sorted(tools) == ["clf", "random", "rules"]
    assert (tools["rules"]["votes"], tools["rules"]["abstains"]) == (40, 20)
    assert tools["rules"]["cost"] == pytest.approx(20 * 1.0 + 20 * 0.1)
    assert tools["clf"]["cost"] == pytest.approx(40.0) and tools["clf"]["abstains"] == 0
    assert tools["rules"]["accuracy"] == 1.0 and tools["clf"]["accuracy"] == 0.5
    assert tools["rules"]["weight"] is None  # 20 votes on ground truth: too few to fit its weight
    assert tools["clf"]["weight"] is not None and 0.0 <= tools["clf"]["weight"] <= 10.0


@pytest.mark.parametrize("route", ["calibration", "precision", "tools"])
def test_unknown_project_answers_404(client: TestClient, route: str) -> None:
    r = client.get(f"/projects/nope/metrics/{route}")
    assert r.status_code == 404
    assert error_message(r) == "project 'nope' does not exist"


@pytest.mark.parametrize("policy", [make_policy(critical_labels=["spam"])])
def test_the_calibration_curve_counts_each_critical_labels_own_sample(
    client: TestClient, store: SqlStore, project: str
) -> None:
    # confidences 0.50-0.53, suggestions ham, spam, ham, spam; answers: spam, spam, ham, ham (items 0 and 3 wrong)
    keys = decide(store, project, ["audit", "audit", "audit", "audit", "accept"], threshold=0.51)
    answer(store, project, {keys[0]: "spam", keys[1]: "spam", keys[2]: "ham", keys[3]: "ham"})
    c = client.get(f"/projects/{project}/metrics/calibration").json()
    needed = fewest_to_certify(make_policy(critical_labels=["spam"]))  # the default rule's (betting) count
    assert needed > min_sample_size(1 - c["target_precision"], c["delta"])  # more than one Clopper-Pearson test
    # spam items: 0 (0.50, below the threshold, wrong) and 1 (0.51, above, right)
    assert c["critical"] == [{"label": "spam", "records": 2, "above_threshold": 1, "errors_above": 0,
                              "needed": needed}]
