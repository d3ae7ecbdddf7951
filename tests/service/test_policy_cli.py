"""``labelagent policy init`` (a starter policy from the shipped template) and ``labelagent policy check``."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import yaml

from policies import load_policy
from policies.io import EXAMPLES_DIR
from service.cli import main


def _dataset(path: Path, header: tuple[str, str], rows: list[tuple[str, str]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as fh:
        writer = csv.writer(fh)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def test_init_reads_the_labels_from_a_dataset_and_changes_nothing_else(tmp_path: Path,
                                                                       capsys: pytest.CaptureFixture[str]) -> None:
    data = _dataset(tmp_path / "Support Tickets.csv", ("text", "label"),
                    [("card lost", "cards"), ("refund please", "refunds"), ("where is my card", "cards"),
                     ("hello", "other")])
    out = tmp_path / "policy.yaml"
    assert main(["policy", "init", "--from-csv", str(data), "--target", "0.9", "--out", str(out)]) == 0
    assert f"check it with `labelagent policy check {out}`" in capsys.readouterr().out
    assert out.read_text().startswith("# Started by `labelagent policy init` from policies/examples/text_embedding")
    policy = load_policy(out)
    assert (policy.project, policy.version, policy.target_precision) == ("support-tickets", 1, 0.9)
    assert policy.labels == ["cards", "other", "refunds"]
    template = yaml.safe_load((EXAMPLES_DIR / "text_embedding.yaml").read_text())
    written = yaml.safe_load(out.read_text())
    for field in ("tools", "labels", "project", "target_precision", "description"):
        written.pop(field), template.pop(field)
    assert written == template  # budget, audits, planner, retraining: the template's own
    kinds = [t.kind for t in policy.tools]
    assert kinds == ["text_classifier", "retrieval", "text_embedding"]
    encoder = policy.tools[2].model_dump()
    assert not encoder["label_descriptions"]  # the template's descriptions are for its own labels


def test_init_lexical_and_image_templates(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "init", "--labels", "ham, spam", "--project", "sms", "--lexical"]) == 0
    lexical = yaml.safe_load(capsys.readouterr().out)
    assert lexical["labels"] == ["ham", "spam"]
    assert [t["kind"] for t in lexical["tools"]] == ["text_classifier", "retrieval"]
    images = tmp_path / "digits"
    images.mkdir()
    _dataset(images / "labels.csv", ("filename", "label"), [("a.png", "7"), ("b.png", "1")])
    assert main(["policy", "init", "--from-csv", str(images)]) == 0
    image = yaml.safe_load(capsys.readouterr().out)
    assert (image["project"], image["data_kind"], image["labels"]) == ("digits", "image", ["1", "7"])
    assert [t["kind"] for t in image["tools"]] == ["image_classifier"]


@pytest.mark.parametrize(("argv", "message"), [
    (["--target", "0.9"], "name the labels with --labels a,b,c or read them from a dataset"),
    (["--labels", "a,b", "--from-csv", "x.csv"], "(one of the two)"),
    (["--labels", "a,a"], "label 'a' is listed twice"),
    (["--labels", "a,b", "--target", "1.5"], "target_precision"),
    (["--labels", "a,b", "--model", "no-such-encoder"], "or start without the sentence encoder (--lexical)"),
    (["--labels", "a,b", "--data-kind", "image", "--lexical"], "an image policy has none"),
    (["--from-csv", "missing.csv"], "does not exist"),
])
def test_init_refuses_what_it_cannot_write(argv: list[str], message: str,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["policy", "init", *argv]) == 2
    captured = capsys.readouterr()
    assert message in captured.err and captured.out == ""


def test_init_never_overwrites_without_force(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "policy.yaml"
    out.write_text("mine")
    assert main(["policy", "init", "--labels", "a,b", "--lexical", "--out", str(out)]) == 2
    assert "exists; give another --out, or --force" in capsys.readouterr().err
    assert out.read_text() == "mine"
    assert main(["policy", "init", "--labels", "a,b", "--lexical", "--out", str(out), "--force"]) == 0
    assert load_policy(out).labels == ["a", "b"]


def test_check_builds_the_tools_and_says_how_each_is_used(tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    good = EXAMPLES_DIR / "sms_spam_embedding.yaml"
    assert main(["policy", "check", str(good)]) == 0
    out = capsys.readouterr().out
    assert f"{good}: ok" in out and "tools built, models found" in out
    assert "tool rules (rules, cost 0.0001): votes on every item\n" in out
    assert "tool encoder (text_embedding, cost 0.005): in the cascade" in out and "learns from answers" in out


def test_check_reports_every_bad_file_and_warns_of_a_tool_never_asked(tmp_path: Path,
                                                                      capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("project: x\nversion: 1\nlabels: [a, b]\ntarget_precision: 0.9\n"
                   "tools:\n  - name: t\n    kind: oracle\n")
    starved = yaml.safe_load((EXAMPLES_DIR / "sms_spam_adaptive.yaml").read_text())
    starved["budget"] = 5
    over = tmp_path / "over.yaml"
    over.write_text(yaml.safe_dump(starved))
    assert main(["policy", "check", "--no-build", str(bad), str(over)]) == 2
    captured = capsys.readouterr()
    assert f"{bad}: tools[0]: unknown tool kind 'oracle'" in captured.err
    assert f"{over}: ok" in captured.out and "tools not built (--no-build)" in captured.out
    assert "WARNING: its cost 10.0 exceeds the budget 5.0, so it is never asked" in captured.out


def test_check_refuses_an_endpoint_the_deployment_does_not_allow(tmp_path: Path,
                                                                 capsys: pytest.CaptureFixture[str]) -> None:
    policy = yaml.safe_load((EXAMPLES_DIR / "sms_spam_llm.yaml").read_text())
    llm = next(t for t in policy["tools"] if t["kind"] == "llm")
    llm.update(base_url="http://169.254.169.254/v1", model="m")
    path = tmp_path / "llm.yaml"
    path.write_text(yaml.safe_dump(policy))
    assert main(["policy", "check", "--no-build", str(path)]) == 2  # as the server's 422, before any tool is built
    assert "tool 'llm': http://169.254.169.254/v1" in capsys.readouterr().err


def test_the_command_line_quiets_model_loading_bars_unless_told_otherwise(monkeypatch: pytest.MonkeyPatch,
                                                                         capsys: pytest.CaptureFixture[str]) -> None:
    import os

    monkeypatch.delenv("HF_HUB_DISABLE_PROGRESS_BARS", raising=False)
    assert main(["policy", "init", "--labels", "a,b", "--lexical"]) == 0
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "1"
    monkeypatch.setenv("HF_HUB_DISABLE_PROGRESS_BARS", "0")  # an operator who wants them keeps them
    assert main(["policy", "init", "--labels", "a,b", "--lexical"]) == 0
    assert os.environ["HF_HUB_DISABLE_PROGRESS_BARS"] == "0"
    capsys.readouterr()


def test_a_project_name_comes_from_the_file_name_without_its_extension(tmp_path: Path) -> None:
    from service.cli_policy import project_name

    assert project_name(tmp_path / "Tickets.2024.csv") == "tickets-2024"
    folder = tmp_path / "digits.v2"
    folder.mkdir()
    assert project_name(folder) == "digits-v2"
