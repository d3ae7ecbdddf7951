"""image_embedding with a small backbone the test builds and saves (torch.export ``.pt2`` and TorchScript ``.pt``).

The backbone is an untrained two-layer conv net: these tests check the tool's plumbing (loading by path,
preprocessing, pooling, the head, neighbours, the cache, bad images), not the quality of any pretrained model.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from pydantic import ValidationError

from policies.exceptions import ToolError
from policies.model import ImageEmbeddingSpec, Policy
from tests.tools.helpers import predict
from tools.base import Batch, Item, Learnable, Tool, TrainingSet
from tools.image_embedding import ImageEmbedding
from tools.registry import build_tools

torch = pytest.importorskip("torch")
LABELS = ("red", "blue")


def backbone(tmp_path: Path, suffix: str = ".pt2") -> Path:
    torch.manual_seed(0)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, stride=2), torch.nn.ReLU(), torch.nn.Conv2d(8, 16, 3),
                              torch.nn.ReLU()).eval()
    path = tmp_path / f"backbone{suffix}"
    example = torch.zeros(2, 3, 32, 32)
    if suffix == ".pt2":
        batch = torch.export.Dim("batch", min=1)
        torch.export.save(torch.export.export(net, (example,), dynamic_shapes=({0: batch},)), str(path))
    else:
        torch.jit.save(torch.jit.trace(net, example), str(path))
    return path


def png(colour: tuple[int, int, int], seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = np.clip(np.asarray(colour) + rng.normal(0, 40, (40, 40, 3)), 0, 255).astype(np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, format="PNG")
    return out.getvalue()


def items(n: int, offset: int) -> tuple[list[Item], np.ndarray]:
    y = np.arange(n) % 2
    colours = [(200, 30, 30), (30, 30, 200)]
    return [Item(f"i{offset + i}", image=png(colours[c], offset + i)) for i, c in enumerate(y)], y


def make(path: Path, **spec: object) -> ImageEmbedding:
    return ImageEmbedding(ImageEmbeddingSpec(name="img", model=str(path), size=32, **spec), LABELS)


@pytest.mark.parametrize("suffix", [".pt2", ".pt"])
def test_learns_from_a_backbone_loaded_by_path(tmp_path: Path, suffix: str) -> None:
    tool = make(backbone(tmp_path, suffix))
    assert isinstance(tool, Tool) and isinstance(tool, Learnable) and tool.version == "img-v0"
    train, y = items(20, 0)
    assert predict(tool, train[:2], LABELS).abstain.all()  # untrained: abstains
    info = tool.fit(TrainingSet(Batch(train), y, LABELS))
    assert info.version == "img-v1" and info.trained_on == 20
    held, truth = items(10, 100)
    votes = predict(tool, held, LABELS)
    assert not votes.abstain.any() and (votes.probs.argmax(axis=1) == truth).all()
    assert " | " in votes.evidence[0] and "neighbours: i" in votes.evidence[0]  # nearest labeled images, by key


def test_undecodable_images_abstain_with_the_reason_and_nothing_is_encoded_twice(tmp_path: Path) -> None:
    tool = make(backbone(tmp_path))
    train, y = items(12, 0)
    bad = Item("bad", image=b"not an image")
    tool.fit(TrainingSet(Batch([*train, bad]), np.append(y, 0), LABELS))
    assert tool.cache.encoded == 12  # the bad image is left out of training
    votes = predict(tool, [train[0], bad, train[1]], LABELS)
    assert votes.abstain.tolist() == [False, True, False] and votes.evidence[1].startswith("img: ")
    assert tool.cache.encoded == 12 and tool.fork().cache is tool.cache


def test_policy_validation_and_building(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="not an installed backbone file"):
        ImageEmbeddingSpec(name="img", model=str(tmp_path / "missing.pt2"))
    path = backbone(tmp_path)
    policy = Policy(project="p", data_kind="image", labels=list(LABELS), target_precision=0.9,
                    tools=[ImageEmbeddingSpec(name="img", model=str(path), size=32)])
    (tool,) = build_tools(policy)
    assert isinstance(tool, ImageEmbedding)
    broken = tmp_path / "broken.pt2"
    broken.write_bytes(b"junk")
    with pytest.raises(ToolError, match=r"cannot load backbone broken\.pt2"):
        make(broken)
