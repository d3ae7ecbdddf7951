"""The service benchmark's bookkeeping (not its measurements): percentiles, the report, its section of the file,
and the ``python -m bench`` dispatcher."""

from __future__ import annotations

from pathlib import Path

import pytest

from bench import figure, mean_sd, write_section
from bench.__main__ import main as bench_main
from bench.service_report import ReviewStats, Setup, latency_figures, percentile, render

SETUP = Setup(warm_items=1000, warm_window=100, ingest_call=1000, oracle_reviewers=4, review_tasks=1500,
              reviewers=50, think=(1.0, 3.0), think_seconds=20.0)


def test_percentile_is_the_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 0.5) == 50.0 and percentile(values, 0.99) == 99.0 and percentile(values, 1.0) == 100.0
    assert percentile([3.0], 0.99) == 3.0
    assert percentile([], 0.5) != percentile([], 0.5)  # NaN


def test_latency_figures_in_milliseconds() -> None:
    stats = ReviewStats(claim=[0.010, 0.020], submit=[0.005, 0.015], pair=[0.015, 0.035], answered=2)
    out = latency_figures("PostgreSQL", 50, None, stats, elapsed=0.5)
    assert out["answers_per_s"] == 4.0 and out["tasks"] == 2
    assert out["claim_p50"] == pytest.approx(10.0) and out["pair_p99"] == pytest.approx(35.0)
    assert out["cpu_api"] is None  # not measured


def test_cpu_per_answer_in_milliseconds() -> None:
    stats = ReviewStats(pair=[0.01] * 4, answered=4, cpu={"api": 0.02, "client": 0.008})
    out = latency_figures("SQLite", 50, None, stats, elapsed=1.0)
    assert out["cpu_api"] == pytest.approx(5.0) and out["cpu_client"] == pytest.approx(2.0)
    assert out["cpu_workers"] is None
    body = render(SETUP, [], [out], [], {}, ["SQLite 3.40.1"], [], [], 1.0)
    assert "| 5.0 / n/a / 2.0 |" in body


def test_figure_formats_a_measurement_or_says_it_is_missing() -> None:
    assert figure(2.345) == "2.3" and figure(2.345, " ms") == "2.3 ms" and figure(1536.0, " MB", ".0f") == "1536 MB"
    assert figure(None) == "n/a" and figure(None, " ms") == "n/a"
    assert figure(0.0, " ms") == "0.0 ms"  # zero is a measurement, not a missing one


def test_mean_sd_formats_the_spread_of_runs() -> None:
    assert mean_sd([1000.0, 1200.0, 1100.0], ",.0f") == "1,100 ± 100"
    assert mean_sd([0.9512], ".4f") == "0.9512"  # one run: no spread to show
    assert mean_sd([], ".4f") == "n/a"


def _throughput(database: str, decided: float, labeled: float) -> dict:
    return {"database": database, "workers": 1, "items": 2000, "ingest": 0.5, "decided": 2000 / decided,
            "labeled": 2000 / labeled, "decided_rate": decided, "labeled_rate": labeled, "auto_rate": 0.95,
            "human": 100}


QUEUE_ROW = {"database": "SQLite", "items": 5574, "human_answers": 620, "taken_over": 1800,
             "taken_over_precision": 0.9962, "max_depth": 900, "wait_mean": 950.4, "wait_p90": 3100, "left_at_end": 200,
             "drain_share": 0.4, "auto_precision": 0.995, "seconds": 60.2}


def test_report_states_the_goals_honestly() -> None:
    stats = ReviewStats(claim=[0.02] * 10, submit=[0.02] * 10, pair=[0.04] * 9 + [0.08], answered=10)
    body = render(SETUP, [_throughput("SQLite", 1500.0, 900.0), _throughput("PostgreSQL", 700.0, 400.0)],
                  [latency_figures("PostgreSQL", 50, (1.0, 3.0), stats, 1.0)], [QUEUE_ROW],
                  {"SQLite": {"api": 200 * 2**20, "worker 1": None}}, ["SQLite 3.40.1"], ["a check"], ["a note"], 12.0)
    assert body.startswith("## Service\n")
    assert "| SQLite | 1 | 2000 | 0.50 | 1.33 | **1500** | 2.22 | **900** | 95.0% | 100 |" in body
    assert "best 1500 items/s decided by the agent, 900 items/s labeled with the oracle's answers (met by the agent " \
           "alone)" in body
    assert "think time 1-3 s: 80.0 ms (NOT met)" in body
    assert "| SQLite | 200 MB | n/a | n/a |" in body
    assert "- a check" in body and "- a note" in body
    assert "| SQLite | 5574 | 620 | 1800 (0.996) | 900 | 950 / 3100 | 200 | 0.40 | 0.9950 | 60 |" in body


def test_write_section_replaces_only_its_own_block(tmp_path: Path) -> None:
    path = tmp_path / "BENCHMARKS.md"
    path.write_text("# Benchmarks\n\n<!-- bench:quality -->\nquality v1\n<!-- /bench:quality -->\n\ntail\n")
    write_section("service", "## Service\nv1\n", path)
    write_section("service", "## Service\nv2\n", path)
    text = path.read_text()
    assert text.count("<!-- bench:service -->") == 1 and "v1" not in text.split("quality v1")[1]
    assert "## Service\nv2\n<!-- /bench:service -->" in text
    assert text.startswith("# Benchmarks\n\n<!-- bench:quality -->\nquality v1\n<!-- /bench:quality -->\n\ntail")


def test_bench_dispatcher_refuses_an_unknown_module(capsys: pytest.CaptureFixture[str]) -> None:
    assert bench_main(["nope"]) == 2
    assert "unknown module 'nope'" in capsys.readouterr().err
    assert bench_main(["--help"]) == 0
    assert "service" in capsys.readouterr().out
