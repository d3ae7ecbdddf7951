"""Image dataset replay: labels.csv with filename,label beside the images (MNIST subset)."""

from __future__ import annotations

import json

import pytest

from policies.io import EXAMPLES_DIR
from service.cli import main
from service.offline.datasets import load_csv
from tests.factories import dataset_path


def test_image_csv_loads_bytes_and_rejects_escapes(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from policies import InputError

    (tmp_path / "labels.csv").write_text("filename,label\n../outside.png,a\n")
    with pytest.raises(InputError, match="not a file inside"):
        load_csv(tmp_path / "labels.csv")



def test_an_image_folder_stands_for_its_labels_csv(tmp_path) -> None:  # type: ignore[no-untyped-def]
    from policies import InputError

    with pytest.raises(InputError, match="folder without labels"):
        load_csv(tmp_path)
    (tmp_path / "a.png").write_bytes(b"not really a png")
    (tmp_path / "labels.csv").write_text("filename,label\na.png,x\n")
    rows = load_csv(tmp_path)
    assert [(r.label, r.item.image) for r in rows] == [("x", b"not really a png")]


@pytest.mark.slow
def test_mnist_replay_meets_its_target(capsys: pytest.CaptureFixture[str]) -> None:
    path = dataset_path("mnist5k/labels.csv")
    rows = load_csv(path)
    assert rows[0].item.image and rows[0].item.metadata == {"filename": "images/00000.png"}
    assert main(["replay", str(path), "--policy", str(EXAMPLES_DIR / "mnist.yaml"), "--json", "--no-progress"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["unlabeled"] == 0
    assert summary["auto_precision"] >= 0.95
    assert summary["human_reviews"] <= 0.35 * summary["items"]
