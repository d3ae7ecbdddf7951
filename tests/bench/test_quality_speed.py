"""The quality benchmark's speed table (issue 18's line: every dataset's replay at least a third of sms_spam's
items/s in the same run): each dataset's mean items/s, its share of the reference's, and the verdict."""

from __future__ import annotations

from typing import Any

import pytest

from bench.quality import DATASETS, SPEED_SHARE, Done, speed_table


def _done(name: str, rates: list[float], items: int = 1_000) -> Done:
    ds = next(d for d in DATASETS if d.name == name)
    runs: list[dict[str, Any]] = [{"items_per_s": r} for r in rates]
    return Done(ds, 0.95, items, list(range(len(rates))), {"labelagent": runs}, [], 1.0)


def _rows(lines: list[str]) -> dict[str, list[str]]:
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    return {c[0]: c[1:] for c in cells}


def test_each_dataset_gets_its_share_of_sms_spams_speed_and_the_verdict() -> None:
    done = {"sms_spam": _done("sms_spam", [3_000.0, 3_600.0], 5_574),
            "banking77": _done("banking77", [1_000.0, 1_200.0]),  # exactly a third of 3,300: met
            "mnist5k": _done("mnist5k", [900.0])}
    rows = _rows(speed_table(done))
    assert rows["sms_spam"] == ["5,574", "3,300 ± 424", "1.000", "-"]
    assert rows["banking77"][1:] == ["1,100 ± 141", "0.333", "met"]
    assert float(rows["banking77"][2]) == pytest.approx(SPEED_SHARE, abs=0.005)
    assert rows["mnist5k"][1:] == ["900", "0.273", "not met"]


def test_without_the_reference_no_share_is_claimed() -> None:
    rows = _rows(speed_table({"banking77": _done("banking77", [500.0, 520.0])}))
    assert rows["banking77"][2:] == ["n/a", "-"]
    # a run without a speed (no item replayed) is left out of the mean, not counted as zero
    rows = _rows(speed_table({"sms_spam": _done("sms_spam", [2_000.0]),
                              "mnist5k": _with_missing(_done("mnist5k", [700.0]))}))
    assert rows["mnist5k"][2] == "0.350"


def _with_missing(done: Done) -> Done:
    done.results["labelagent"].append({"items_per_s": None})
    return done
