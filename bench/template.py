"""Write the text template policy for a labeled CSV: only the labels (from the data) and the target change
(``policies.template``, which ``labelagent policy init`` writes from too).

    python -m bench.template DATA.csv --target 0.95 --out policy.yaml [--lexical]

``--lexical`` drops the sentence encoder (the lexical-only policy it is compared with); nothing else differs.
``--critical LABEL`` (repeatable) names labels whose own error the certificate bounds (``critical_labels``): part
of the label set's declaration, for comparisons; the reported template runs leave it out.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import yaml

from policies.template import template_policy
from service.offline.datasets import dataset_labels


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("data", type=Path)
    parser.add_argument("--target", type=float, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--lexical", action="store_true")
    parser.add_argument("--critical", action="append", default=[], metavar="LABEL")
    args = parser.parse_args(argv)
    labels, _ = dataset_labels(args.data)
    project = args.data.stem.lower().replace(".", "-") + ("-lexical" if args.lexical else "")
    policy = template_policy(labels, args.target, project, lexical=args.lexical, critical=tuple(args.critical))
    args.out.write_text(yaml.safe_dump(policy, sort_keys=False))


if __name__ == "__main__":
    main()
