"""End-to-end replay on real data: store, worker, agent, learner and oracle reviewer together."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from agent.state import Retrained
from policies import example_policy, load_policy
from policies.io import EXAMPLES_DIR
from service.cli import main
from service.offline import RETRAIN_LAG
from service.offline.datasets import load_csv
from service.offline.replay import ReplayConfig, run_replay
from service.runtime.cycle import ProjectWorker, Retraining
from service.store import SqlStore
from service.store.db import create_all, make_engine
from service.store.redecide import PROMOTED_ACTION, RELEASED_ACTION
from tests.factories import dataset_path
from tools.environment import ToolEnvironment
from tools.registry import build_tools


def replay(tmp_path: Path, dataset: str, policy_name: str, limit: int, batch_size: int = 64,
           retrain_lag: int = RETRAIN_LAG, **policy_fields: object) -> dict:
    policy = example_policy(policy_name).model_copy(update=policy_fields)
    tmp_path.mkdir(parents=True, exist_ok=True)
    engine = make_engine(f"sqlite:///{tmp_path / 'replay.db'}")
    create_all(engine)
    try:
        rows = load_csv(dataset_path(dataset))
        return asyncio.run(run_replay(rows, policy, build_tools(policy), SqlStore(engine),
                                      ReplayConfig(batch_size=batch_size, seed=0, limit=limit,
                                                                   retrain_lag=retrain_lag)))
    finally:
        engine.dispose()


def test_sms_slice_every_item_labeled_once_and_target_held(tmp_path: Path) -> None:
    out = replay(tmp_path, "sms_spam.csv", "sms_spam", limit=2000)
    assert out["items"] == 2000
    assert out["auto_labeled"] + out["human_reviews"] == 2000 and out["unlabeled"] == 0
    assert out["auto_labeled"] > 1000  # the agent does take over once calibrated
    assert out["auto_precision"] >= 0.98
    assert out["overall_accuracy"] >= 0.98
    assert out["human_reviews"] >= 150  # the cold start is reviewed: nothing is auto-labeled uncalibrated
    assert out["audits"] > 0
    assert set(out["tool_calls"]) == {"rules", "classifier", "retrieval"}


def test_agent_discounts_a_useless_voter_and_spares_an_expensive_one(tmp_path: Path) -> None:
    out = replay(tmp_path, "sms_spam.csv", "sms_spam_adaptive", limit=2500)
    weights, calls = out["tool_weights"], out["tool_calls"]
    assert weights["coin"] < 0.1  # the random voter's weight fell toward zero
    assert weights["classifier"] > 0.5
    assert calls["deep_classifier"] < 0.5 * out["items"]  # the 10x tool on a minority of items
    assert calls["classifier"] == out["items"]  # cheap tools vote on everything
    assert out["auto_precision"] >= 0.98  # precision unaffected


def test_cli_replay_prints_one_json_summary_last(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data = dataset_path("sms_spam.csv")
    code = main(["replay", str(data), "--policy", str(EXAMPLES_DIR / "sms_spam.yaml"), "--limit", "300", "--json",
                 "--batch-size", "100"])
    assert code == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    summary = json.loads(last)
    for key in ("items", "auto_labeled", "human_reviews", "audits", "auto_precision", "auto_precision_ci",
                "overall_accuracy", "target_precision", "items_per_s", "tool_calls", "policy"):
        assert key in summary
    assert summary["items"] == 300 and summary["policy"] == "sms_spam/1"


def test_cli_replay_report_states_the_summary_s_figures(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["replay", str(dataset_path("sms_spam.csv")), "--policy", str(EXAMPLES_DIR / "sms_spam.yaml"),
            "--limit", "600", "--batch-size", "100", "--no-progress"]
    assert main([*argv, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert main(argv) == 0  # the same seed: the same decisions, told for a person
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].startswith("sms_spam/1: 600 items in ")
    assert lines[1].split()[:2] == ["auto-labeled", str(summary["auto_labeled"])]
    lo, hi = summary["auto_precision_ci"]
    assert f"precision {summary['auto_precision']:.4f} (95% CI {lo:.4f}-{hi:.4f}), target 0.98: held" in lines[1]
    assert lines[2].split()[:3] == ["to", "humans", str(summary["human_reviews"])]
    assert f"{summary['audits']} of them audits" in lines[2]
    assert summary["labels"] == 2
    every = " (at or under 1/2: every item clears it)" if summary["threshold"] <= 0.5 else ""
    assert (f"threshold {summary['threshold']}{every}; certificate lost 0 times; {summary['retrains']} retrains"
            in lines[3])
    assert lines[-1] == "every figure: --json"


def test_cli_replay_bad_input_is_a_clear_error(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("text,category\nhello,x\n")
    assert main(["replay", str(bad), "--policy", str(EXAMPLES_DIR / "sms_spam.yaml")]) == 2
    assert "has no 'label' column" in capsys.readouterr().err
    assert main(["replay", str(tmp_path / "missing.csv"), "--policy", str(EXAMPLES_DIR / "sms_spam.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err
    sms = str(dataset_path("sms_spam.csv"))
    assert main(["replay", sms, "--policy", str(EXAMPLES_DIR / "sms_spam.yaml"), "--retrain-lag", "0"]) == 2
    assert "retrain lag 0" in capsys.readouterr().err


def test_example_policies_build_their_tools() -> None:
    # a deployment that names an LLM endpoint (the llm example takes it from LABELAGENT_LLM_BASE_URL / _MODEL)
    env = ToolEnvironment(llm_base_url="http://127.0.0.1:8000/v1", llm_model="qwen2.5-7b-instruct")
    for path in sorted(EXAMPLES_DIR.glob("*.yaml")):
        policy = load_policy(path)
        tools = build_tools(policy, env=env)
        assert [t.name for t in tools] == [t.name for t in policy.tools if t.enabled]


def _decisions(out: dict) -> dict:
    timing = {"items_per_s", "seconds", "retrain_seconds"}
    return {k: v for k, v in out.items() if k not in timing}


def test_retraining_in_a_thread_decides_as_retraining_in_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The replay's cycle is deterministic: with lag 1 a retrain computed in a thread and published before the next
    graph run decides as one computed on this thread; a lag of 2 gives the same figures twice."""
    threaded = replay(tmp_path / "a", "sms_spam.csv", "sms_spam", limit=1200, retrain_lag=1)
    lagged = replay(tmp_path / "b", "sms_spam.csv", "sms_spam", limit=1200, retrain_lag=2)
    again = replay(tmp_path / "c", "sms_spam.csv", "sms_spam", limit=1200, retrain_lag=2)

    def in_line(self: ProjectWorker) -> asyncio.Future[Retrained]:
        done = asyncio.get_running_loop().create_future()
        done.set_result(self.labeler.learner.prepare_retrain())  # on this thread, before the replay goes on
        self.training = Retraining(done, self.runs)  # type: ignore[arg-type]
        return done

    monkeypatch.setattr(ProjectWorker, "start_retrain", in_line)
    inline = replay(tmp_path / "d", "sms_spam.csv", "sms_spam", limit=1200, retrain_lag=1)
    assert threaded["retrains"] > 3 and lagged["retrain_lag"] == 2 and threaded["retrain_lag"] == 1
    assert _decisions(threaded) == _decisions(inline)
    assert _decisions(lagged) == _decisions(again)


def test_replay_file_order_keeps_the_rows_and_overlap_is_refused(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    from service.offline.replay import shuffled

    rows = load_csv(dataset_path("sms_spam.csv"))
    assert [r.item.key for r in shuffled(rows, 3, 50, "file")] == [r.item.key for r in rows[:50]]
    assert [r.item.key for r in shuffled(rows, 3, 50)] != [r.item.key for r in rows[:50]]
    policy = tmp_path / "overlap.yaml"
    policy.write_text((EXAMPLES_DIR / "sms_spam.yaml").read_text().replace("overlap: 1", "overlap: 2"))
    assert main(["replay", str(dataset_path("sms_spam.csv")), "--policy", str(policy), "--limit", "50"]) == 2
    assert "overlap 2 cannot be met" in capsys.readouterr().err


def test_replay_summary_reports_the_certificate_history(tmp_path: Path) -> None:
    out = replay(tmp_path / "anytime", "sms_spam.csv", "sms_spam", limit=1500, certification="anytime")
    assert out["certificate_tests"] >= 1 and out["snapshot_count"] > out["certificate_tests"]
    # a stationary stream: no drift detected, so no certificate was lost and none went missing once won
    assert out["drift_detections"] == 0 and out["drift_detected_at"] == []
    assert out["certificate_losses"] == 0 and out["items_without_certificate_after_first"] == 0
    # per_batch re-tests after every batch, so it may lose a certificate and win it back: the summary counts both,
    # and an item decided without a certificate after the first one only when one was lost
    per_batch = replay(tmp_path / "per_batch", "sms_spam.csv", "sms_spam", limit=1500, certification="per_batch")
    assert per_batch["certificate_tests"] > out["certificate_tests"]
    assert (per_batch["items_without_certificate_after_first"] > 0) == (per_batch["certificate_losses"] > 0)


def finite(tmp_path: Path, *, plain: bool, rate: float = 0.1, limit: int = 1200) -> dict:
    # per_batch: its first certificate comes within the ~130 answers ten reviewers per hundred items give over
    # 1,200 items, so items wait in the queue under a certificate (betting needs about 1.5 times as many)
    policy = example_policy("sms_spam").model_copy(update={"certification": "per_batch"})
    engine = make_engine(f"sqlite:///{tmp_path / ('plain.db' if plain else 'redecide.db')}")
    create_all(engine)
    try:
        rows = load_csv(dataset_path("sms_spam.csv"))
        config = ReplayConfig(batch_size=64, seed=0, limit=limit, reviewer_rate=rate, plain_queue=plain)
        return asyncio.run(run_replay(rows, policy, build_tools(policy), SqlStore(engine), config))
    finally:
        engine.dispose()


def test_finite_reviewers_answer_at_their_rate_and_the_agent_takes_over_waiting_items(tmp_path: Path) -> None:
    out = finite(tmp_path, plain=False)
    n = out["items"]
    assert out["auto_labeled"] + out["human_reviews"] == n and out["unlabeled"] == 0  # each item labeled once
    assert out["queue_left"] == 0 and out["drain_items_after_stream"] is not None
    # the reviewers never answer faster than their rate over the stream's time and the drain's
    assert out["human_answers"] == out["human_reviews"] <= 0.1 * (n + out["drain_items_after_stream"]) + 1
    assert out["max_queue_depth"] >= out["queue_left_at_end_of_stream"] > 0
    assert out["auto_labeled_while_waiting"] > 0
    assert 0 < out["wait_mean_items"] <= out["wait_p90_items"] * 2
    plain = finite(tmp_path, plain=True)
    assert plain["auto_labeled_while_waiting"] == 0 and plain["samples_released"] == 0
    assert plain["auto_labeled"] + plain["human_reviews"] == n
    assert out["human_reviews"] < plain["human_reviews"]  # re-deciding takes work off the reviewers


def test_samples_no_reviewer_reached_are_released_when_a_certificate_comes(tmp_path: Path) -> None:
    """Reviewers slower than the stream (a fifth of an answer per item): the cold-start samples still open when the
    first certificate comes are released into the queue and re-decided; the same run without the release answers
    them all. Each item is labeled once either way."""
    policy = example_policy("sms_spam").model_copy(update={"certification": "per_batch"})
    rows = load_csv(dataset_path("sms_spam.csv"))
    runs = {}
    for parts in ("sample,order,redecide,release", "sample,order,redecide"):
        engine = make_engine(f"sqlite:///{tmp_path / (parts.replace(',', '-') + '.db')}")
        create_all(engine)
        try:
            config = ReplayConfig(batch_size=64, seed=0, limit=1200, reviewer_rate=0.2, queue_parts=parts)
            out = asyncio.run(run_replay(rows, policy, build_tools(policy), SqlStore(engine), config))
            events = [e for e in SqlStore(engine).audit.list_audit(policy.project) if e.action == RELEASED_ACTION]
        finally:
            engine.dispose()
        assert out["auto_labeled"] + out["human_reviews"] == out["items"] and out["unlabeled"] == 0
        assert out["samples_released"] == sum(e.detail["samples_released"] for e in events)
        runs[parts] = out
    released, kept = runs["sample,order,redecide,release"], runs["sample,order,redecide"]
    assert released["samples_released"] > 0 and kept["samples_released"] == 0
    assert released["human_reviews"] < kept["human_reviews"]
    assert released["auto_precision"] >= policy.target_precision


def test_cli_replay_reviewer_rate_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["replay", str(dataset_path("sms_spam.csv")), "--limit", "300", "--reviewer-rate", "0.5", "--json",
                 "--no-progress", "--db", f"sqlite:///{tmp_path / 'cli.db'}"])
    assert code == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["reviewer_rate"] == 0.5 and out["human_answers"] == out["human_reviews"]


@pytest.mark.parametrize("args", [["--reviewer-rate", "0"], ["--reviewer-rate", "-1"], ["--queue-parts", "teach"],
                                  ["--reviewer-rate", "0.5", "--url", "http://127.0.0.1:9"]])
def test_cli_replay_refuses_bad_queue_arguments(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                                args: list[str]) -> None:
    code = main(["replay", str(dataset_path("sms_spam.csv")), "--limit", "50", "--json", "--no-progress",
                 *([] if "--url" in args else ["--db", f"sqlite:///{tmp_path / 'bad.db'}"]), *args])
    assert code == 2
    assert capsys.readouterr().err.startswith("labelagent: ")


def test_the_summary_reports_each_critical_labels_own_precision() -> None:
    from service.offline.replay import critical_precision

    truth = {"a": "oos", "b": "oos", "c": "oos", "d": "alarm"}
    auto = [("a", "oos"), ("b", "alarm"), ("d", "alarm")]  # c went to a human
    report = critical_precision(auto, truth, ["oos", "alarm", "greeting"])
    assert report["oos"]["auto"] == 2 and report["oos"]["right"] == 1 and report["oos"]["precision"] == 0.5
    assert report["alarm"]["precision"] == 1.0 and report["greeting"] == {
        "auto": 0, "right": 0, "precision": None, "precision_ci": [0.0, 1.0]}
    lo, hi = report["oos"]["precision_ci"]
    assert 0.0 < lo < 0.5 < hi < 1.0


def test_an_import_keeps_calibrating_when_its_samples_run_out(tmp_path: Path) -> None:
    """An import: 2,000 items in two batches, decided before anyone answers, reviewers at a twentieth of an answer
    per item. The samples allowed at once are answered long before the stream's items are; without promotion the
    waiting items were answered but could not calibrate, and no certificate came before the drain ended (0 auto
    labels, 900 items still queued). The oldest waiting items are promoted to samples instead."""
    policy = example_policy("sms_spam")
    engine = make_engine(f"sqlite:///{tmp_path / 'import.db'}")
    create_all(engine)
    try:
        config = ReplayConfig(batch_size=1000, seed=0, limit=2000, reviewer_rate=0.05)
        out = asyncio.run(run_replay(load_csv(dataset_path("sms_spam.csv")), policy, build_tools(policy),
                                     SqlStore(engine), config))
        events = [e for e in SqlStore(engine).audit.list_audit(policy.project) if e.action == PROMOTED_ACTION]
    finally:
        engine.dispose()
    assert out["samples_promoted"] == sum(e.detail["samples_promoted"] for e in events) > 0
    assert out["auto_labeled"] > 0 and out["auto_precision"] >= policy.target_precision
    assert out["auto_labeled"] + out["human_reviews"] + out["queue_left"] == out["items"] == 2000  # each once
