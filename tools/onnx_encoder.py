"""A sentence encoder on ONNX Runtime, exported here from the local sentence-transformers folder.

``runtime: onnx`` (float32) or ``runtime: onnx-int8`` in a ``text_embedding`` spec. The first use exports the
model's transformer to ONNX (with torch, from the local folder: nothing is downloaded), for ``onnx-int8`` quantizes
its weights to int8 per channel (dynamic quantization), and keeps the file on disk, keyed by the model's path and
the export settings, so later processes load it directly. Encoding is then tokenizer (``tokenizers``, the folder's
``tokenizer.json``) -> ONNX Runtime -> mean pooling over the attention mask -> L2 normalisation, which is what
all-MiniLM-L6-v2's sentence-transformers pipeline does. float32 gives the torch encoder's vectors (to ~1e-6);
int8 is faster but approximate, and its vectors depend slightly on the batch a text is encoded in (dynamic
quantization scales each batch's activations together). Measurements in DESIGN-NOTES section 13.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from policies.exceptions import ToolError
from policies.installed import ModelNotInstalledError, resolve_model
from policies.model import TextEmbeddingSpec
from tools.length_buckets import encode_in_buckets

EXPORT_VERSION = "1"  # bump when the export or the quantization settings change: a new file, never a stale one
INPUTS = ("input_ids", "attention_mask", "token_type_ids")


def default_export_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "labelagent" / "onnx"


def _check_pooling(model_dir: Path, name: str) -> None:
    """Refuse a folder whose sentence pipeline is not mean pooling (the only one this runtime reproduces)."""
    config = model_dir / "1_Pooling" / "config.json"
    if config.exists():
        pooling = json.loads(config.read_text())
        if not pooling.get("pooling_mode_mean_tokens", False):
            raise ToolError(f"tool {name!r}: runtime onnx supports mean-pooling models only; use runtime: torch")
    if not (model_dir / "tokenizer.json").exists():
        raise ToolError(f"tool {name!r}: runtime onnx needs the model folder's tokenizer.json; use runtime: torch")


def export_onnx(model_dir: Path, folder: Path, *, int8: bool) -> Path:
    """The ONNX file (float32, or int8 weights) of the model in ``model_dir``, made in ``folder`` unless it is there."""
    key = hashlib.blake2b(f"{model_dir.resolve()}|{EXPORT_VERSION}".encode(), digest_size=8).hexdigest()
    target = folder / f"{key}-{'int8' if int8 else 'fp32'}.onnx"
    if target.exists():
        return target
    import torch
    from onnxruntime.quantization import QuantType, quantize_dynamic
    from transformers import AutoModel

    folder.mkdir(parents=True, exist_ok=True)
    bert = AutoModel.from_pretrained(str(model_dir), local_files_only=True).eval()

    class Hidden(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.bert = bert

        def forward(self, ids: Any, mask: Any, types: Any) -> Any:
            return self.bert(input_ids=ids, attention_mask=mask, token_type_ids=types).last_hidden_state

    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        plain, quantized = Path(tmp) / "model.onnx", Path(tmp) / "model-int8.onnx"
        ids = torch.ones(2, 8, dtype=torch.long)
        axes = {name: {0: "batch", 1: "tokens"} for name in (*INPUTS, "last_hidden_state")}
        with torch.no_grad():
            torch.onnx.export(Hidden().eval(), (ids, torch.ones_like(ids), torch.zeros_like(ids)), str(plain),
                              input_names=list(INPUTS), output_names=["last_hidden_state"], dynamic_axes=axes,
                              opset_version=17, dynamo=False)
        if int8:
            quantize_dynamic(str(plain), str(quantized), weight_type=QuantType.QInt8, per_channel=True)
        os.replace(quantized if int8 else plain, target)  # atomic: a concurrent process sees the whole file or none
    return target


class OnnxEncoder:
    """:class:`tools.text_embedding.TextEncoder` on ONNX Runtime (CPU); ``threads`` intra-op (0: ONNX Runtime's)."""

    def __init__(self, spec: TextEmbeddingSpec, export_dir: Path | None = None, threads: int = 0) -> None:
        try:
            model_dir = resolve_model(spec.model)
        except ModelNotInstalledError as exc:
            raise ToolError(f"tool {spec.name!r}: {exc}") from None
        _check_pooling(model_dir, spec.name)
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError:
            raise ToolError(f"tool {spec.name!r}: the onnx runtimes need onnxruntime and onnx; install the "
                            "optional extra: pip install 'labelagent[embeddings]'") from None
        self.path = export_onnx(model_dir, export_dir or default_export_dir(), int8=spec.runtime == "onnx-int8")
        options = ort.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")  # no busy-waiting on shared CPUs
        self.session = ort.InferenceSession(str(self.path), options, providers=["CPUExecutionProvider"])
        self.tokenizer = Tokenizer.from_file(str(model_dir / "tokenizer.json"))
        self.tokenizer.enable_truncation(spec.max_seq_length)
        self.tokenizer.no_padding()  # each bucket is padded to its own longest text (``_encode_bucket``)
        self.batch_size = spec.batch_size

    def encode(self, texts: list[str]) -> np.ndarray:
        tokens = [e.ids for e in self.tokenizer.encode_batch(texts)]
        return encode_in_buckets([len(t) for t in tokens], self.batch_size,  # similar lengths: little padding
                                 lambda rows: self._encode_bucket([tokens[i] for i in rows]))

    def _encode_bucket(self, tokens: list[list[int]]) -> np.ndarray:
        width = max(len(t) for t in tokens)
        ids = np.zeros((len(tokens), width), dtype=np.int64)  # 0 is [PAD]
        mask = np.zeros((len(tokens), width), dtype=np.int64)
        for row, t in enumerate(tokens):
            ids[row, :len(t)] = t
            mask[row, :len(t)] = 1
        hidden = self.session.run(None, {"input_ids": ids, "attention_mask": mask,
                                         "token_type_ids": np.zeros_like(ids)})[0]
        pooled = (hidden * mask[:, :, None]).sum(axis=1) / np.maximum(mask.sum(axis=1, keepdims=True), 1)
        norms = np.maximum(np.linalg.norm(pooled, axis=1, keepdims=True), 1e-12)
        return np.asarray(pooled / norms, dtype=np.float32)
