"""Policies on disk: YAML in, YAML out, with errors that name the field and the fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from policies.exceptions import PolicyError
from policies.model import TOOL_KINDS, Policy

EXAMPLES_DIR = Path(__file__).parent / "examples"


def _location(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for i, part in enumerate(loc):
        if isinstance(part, int):
            parts.append(f"[{part}]")
        elif i >= 2 and loc[i - 2] == "tools" and isinstance(loc[i - 1], int) and part in TOOL_KINDS:
            continue  # the discriminator's branch name (tools[0].rules...) adds nothing for the reader
        else:
            parts.append(("." if parts else "") + str(part))
    return "".join(parts) or "policy"


def format_validation_error(exc: ValidationError) -> str:
    """One line per problem: ``field: what is wrong``."""
    lines = []
    for err in exc.errors():
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field; remove it or check its spelling"
        elif err["type"] == "union_tag_invalid":
            msg = f"unknown tool kind {err.get('input', {}).get('kind')!r}; " + msg.split(";")[-1].strip()
        lines.append(f"{_location(tuple(err['loc']))}: {msg}")
    return "; ".join(lines)


def parse_policy(data: Any) -> Policy:
    """Validate a mapping (from YAML or JSON) into a :class:`Policy` or raise :class:`PolicyError`."""
    if not isinstance(data, dict):
        raise PolicyError("policy: expected a mapping of fields, got " + type(data).__name__)
    try:
        return Policy.model_validate(data)
    except ValidationError as exc:
        raise PolicyError(format_validation_error(exc)) from None


def loads_policy(text: str) -> Policy:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise PolicyError(f"policy: not valid YAML ({exc})") from None
    return parse_policy(data)


def load_policy(path: str | Path) -> Policy:
    path = Path(path)
    if not path.exists():
        raise PolicyError(f"policy file {path} does not exist")
    return loads_policy(path.read_text(encoding="utf-8"))


def dumps_policy(policy: Policy) -> str:
    data = policy.model_dump(mode="json", exclude_defaults=False)
    text: str = yaml.safe_dump(data, sort_keys=False, allow_unicode=True)
    return text


def save_policy(policy: Policy, path: str | Path) -> Path:
    path = Path(path)
    path.write_text(dumps_policy(policy), encoding="utf-8")
    return path


def example_policy(name: str) -> Policy:
    """A bundled example policy by name (``sms_spam``, ``banking77``, ...)."""
    path = EXAMPLES_DIR / f"{name}.yaml"
    if not path.exists():
        known = ", ".join(sorted(p.stem for p in EXAMPLES_DIR.glob("*.yaml")))
        raise PolicyError(f"no example policy {name!r}; known: {known}")
    return load_policy(path)
