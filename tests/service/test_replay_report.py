"""``service.offline.report``: the replay's summary told for a person, for the in-process and the HTTP replay."""

from __future__ import annotations

from typing import Any

from service.offline.report import report


def _summary(**changes: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "items": 2000, "auto_labeled": 1500, "human_reviews": 500, "audits": 20, "auto_precision": 0.97,
        "auto_precision_ci": [0.961, 0.978], "target_precision": 0.95, "unlabeled": 0, "items_per_s": 1234.5,
        "seconds": 1.62, "threshold": 0.81, "certificate_losses": 1, "retrains": 9, "agent_accuracy": 0.9321,
        "tool_calls": {"classifier": 2000, "encoder": 700}, "tool_reach": {"classifier": 1.0, "encoder": 0.35},
        "tool_weights": {"classifier": 1.5, "encoder": 0.75}, "policy": "p/2",
        "auto_errors_by_truth": {"a": {"auto": 900, "wrong": 5}, "b": {"auto": 600, "wrong": 40}},
        "tool_failures": {},
    }
    return {**base, **changes}


def test_the_report_leads_with_what_was_auto_labeled_and_how_well() -> None:
    lines = report(_summary()).splitlines()
    assert lines[0] == "p/2: 2,000 items in 1.6 s (1,234 items/s)"
    assert lines[1] == "  auto-labeled    1,500 (75.0%)  precision 0.9700 (95% CI 0.9610-0.9780), target 0.95: held"
    assert lines[2] == "  to humans         500 (25.0%)  20 of them audits of would-be auto labels"
    assert lines[3] == "  threshold 0.81; certificate lost 1 times; 9 retrains; agent right on 93.2% of all items"
    assert lines[4] == "  tools: classifier reach 100%, weight 1.50; encoder reach 35%, weight 0.75"
    assert lines[5] == "  auto-label errors by true label: b 40 of 600; a 5 of 900"  # the worst first
    assert lines[-1] == "every figure: --json"


def test_the_report_says_when_the_target_was_missed_items_were_lost_or_a_tool_failed() -> None:
    text = report(_summary(auto_precision=0.93, unlabeled=3, tool_failures={"llm": 4}))
    assert "precision 0.9300 (95% CI 0.9610-0.9780), target 0.95: NOT held" in text
    assert "  tool failures (graph runs): llm 4" in text
    assert "  WARNING: 3 items left without a label" in text
    assert "nothing auto-labeled (target 0.95)" in report(_summary(auto_labeled=0, auto_precision=None,
                                                                      threshold=None))
    assert "no certified threshold at the end" in report(_summary(threshold=None))


def test_the_report_reads_the_http_replay_s_summary() -> None:
    """The HTTP replay has no reach, weights, retrains or loss count: the report says what it has."""
    http = _summary(tool_weights=None, retrains=None, agent_accuracy=None, auto_errors_by_truth=None)
    for key in ("tool_reach", "certificate_losses", "tool_failures"):
        http.pop(key)
    lines = report(http).splitlines()
    assert lines[3] == "  threshold 0.81"
    assert lines[4] == "  tools: classifier 2,000 items; encoder 700 items"
    assert len(lines) == 6


def test_a_threshold_no_confidence_can_fall_under_is_called_what_it_is() -> None:
    """The grid reaches down to ``alpha / 10``; on two labels a certified 0.01 means every item is auto-labeled
    (the top label's pooled share is at least 1/2), which "threshold 0.01" alone does not tell a reader."""
    assert "threshold 0.01 (at or under 1/2: every item clears it);" in report(_summary(threshold=0.01, labels=2))
    assert "threshold 0.5 (at or under 1/2: every item clears it);" in report(_summary(threshold=0.5, labels=2))
    assert "threshold 0.3 (at or under 1/3: every item clears it);" in report(_summary(threshold=0.3, labels=3))
    assert "threshold 0.4;" in report(_summary(threshold=0.4, labels=3))  # three labels at 0.35 / 0.33 / 0.32: under
    assert "threshold 0.01;" in report(_summary(threshold=0.01))  # a summary without the label count says nothing
