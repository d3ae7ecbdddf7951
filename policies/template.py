"""Starter policies: a shipped template with only the project, the labels and the target changed.

The text template is ``examples/text_embedding.yaml`` (lexical tools on every item, the packaged sentence encoder in
the cascade); ``lexical`` drops the encoder (for an install without the embeddings extra), ``model`` names another
encoder. The image template is ``examples/mnist.yaml``'s tools (the pixel classifier). The benchmarks' template
runs and ``labelagent policy init`` both build their policies here, so what is measured is what users start from.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

import yaml

from policies.exceptions import PolicyError
from policies.installed import ModelNotInstalledError, resolve_model
from policies.io import EXAMPLES_DIR, parse_policy

TEMPLATES: dict[str, str] = {"text": "text_embedding.yaml", "image": "mnist.yaml"}
DataKind = Literal["text", "image"]


def template_policy(labels: Sequence[str], target: float, project: str, *, data_kind: DataKind = "text",
                    lexical: bool = False, model: str | None = None,
                    critical: Sequence[str] = ()) -> dict[str, Any]:
    """The template for ``data_kind`` as a mapping (fields in the template's order) with ``project``, ``labels``
    and ``target_precision`` set; ``critical`` fills ``critical_labels``. Not validated: :func:`starter_policy`."""
    if data_kind not in TEMPLATES:
        raise PolicyError(f"data kind {data_kind!r} has no template; use one of {', '.join(TEMPLATES)}")
    if data_kind != "text" and (lexical or model):
        raise PolicyError("--lexical and --model choose the text template's encoder; an image policy has none")
    policy: dict[str, Any] = yaml.safe_load((EXAMPLES_DIR / TEMPLATES[data_kind]).read_text(encoding="utf-8"))
    policy.update(project=project, version=1, labels=list(labels), target_precision=target)
    policy["description"] = f"{project}: started from the {data_kind} template."
    if critical:
        policy["critical_labels"] = list(critical)
    tools = []
    for tool in policy["tools"]:
        if tool["kind"] == "text_embedding":
            if lexical:
                continue
            tool = {k: v for k, v in tool.items() if k != "label_descriptions"}  # the template's are for its labels
            if model:
                tool["model"] = model
        tools.append(tool)
    policy["tools"] = tools
    return policy


def starter_policy(labels: Sequence[str], target: float, project: str, *, data_kind: DataKind = "text",
                   lexical: bool = False, model: str | None = None) -> str:
    """:func:`template_policy` validated (a model that is not installed is refused here, as everywhere) and written
    as YAML with a header that says where it came from and what to change."""
    policy = template_policy(labels, target, project, data_kind=data_kind, lexical=lexical, model=model)
    for tool in policy["tools"]:
        if tool["kind"] == "text_embedding":
            try:
                resolve_model(tool["model"])
            except ModelNotInstalledError as exc:
                raise PolicyError(f"{exc}; or start without the sentence encoder (--lexical)") from None
    parse_policy(policy)
    encoder = "without the sentence encoder" if lexical else "with the sentence encoder in the cascade"
    header = [f"# Started by `labelagent policy init` from policies/examples/{TEMPLATES[data_kind]}: only the project,",
              "# the labels and the target differ. " + (f"Text, {encoder}." if data_kind == "text" else "Images."),
              "# Check it with `labelagent policy check FILE`; fields are explained in the README (Policies)."]
    body: str = yaml.safe_dump(policy, sort_keys=False, allow_unicode=True)
    return "\n".join(header) + "\n" + body
