"""Write the text template policy for a labeled CSV: only the labels (from the data) and the target change.

    python -m bench.template DATA.csv --target 0.95 --out policy.yaml [--lexical]

``--lexical`` drops the sentence encoder (the lexical-only policy it is compared with); nothing else differs.
``--critical LABEL`` (repeatable) names labels whose own error the certificate bounds (``critical_labels``): part
of the label set's declaration, for comparisons; the reported template runs leave it out.
"""

from __future__ import annotations

import argparse
import csv
from pathlib import Path
from typing import Any

import yaml

TEMPLATE = Path(__file__).resolve().parent.parent / "policies" / "examples" / "text_embedding.yaml"


def template_policy(labels: list[str], target: float, project: str, *, lexical: bool = False,
                    critical: tuple[str, ...] = ()) -> dict[str, Any]:
    policy: dict[str, Any] = yaml.safe_load(TEMPLATE.read_text())
    policy.update(project=project, labels=labels, target_precision=target)
    if critical:
        policy["critical_labels"] = list(critical)
    tools = []
    for tool in policy["tools"]:
        if tool["kind"] == "text_embedding":
            if lexical:
                continue
            tool = {k: v for k, v in tool.items() if k != "label_descriptions"}  # the template's are for its labels
        tools.append(tool)
    policy["tools"] = tools
    return policy


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--target", type=float, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--lexical", action="store_true")
    parser.add_argument("--critical", action="append", default=[], metavar="LABEL")
    args = parser.parse_args(argv)
    with args.data.open(newline="", encoding="utf-8") as f:
        labels = sorted({row["label"] for row in csv.DictReader(f)})
    project = args.data.stem.lower().replace(".", "-") + ("-lexical" if args.lexical else "")
    policy = template_policy(labels, args.target, project, lexical=args.lexical, critical=tuple(args.critical))
    args.out.write_text(yaml.safe_dump(policy, sort_keys=False))


if __name__ == "__main__":
    main()
