"""Shared field types: strings the databases accept (no NUL characters), JSON values that are JSON (finite numbers),
names, labels and lease tokens."""

from __future__ import annotations

import math
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints

MAX_JSON_DEPTH = 32
MAX_LABEL_CHARS = 128  # a label's longest spelling (the label columns hold 128)


def no_nul(value: str) -> str:
    if "\x00" in value:
        raise ValueError("must not contain NUL (\\u0000) characters")
    return value


def json_safe(value: Any, depth: int = 0) -> Any:
    """``value`` if both databases can store it as JSON: finite numbers, no NUL in strings, bounded nesting."""
    if depth > MAX_JSON_DEPTH:
        raise ValueError(f"is nested deeper than {MAX_JSON_DEPTH} levels")
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError("holds NaN or Infinity, which JSON cannot carry; send null or a number")
    if isinstance(value, str):
        no_nul(value)
    elif isinstance(value, dict):
        for key, item in value.items():
            no_nul(str(key))
            json_safe(item, depth + 1)
    elif isinstance(value, list):
        for item in value:
            json_safe(item, depth + 1)
    return value


class Request(BaseModel):
    """Base of request bodies: unknown fields are rejected (a client cannot set server-owned fields)."""

    model_config = ConfigDict(extra="forbid")


SafeText = Annotated[str, AfterValidator(no_nul)]
JsonObject = Annotated[dict[str, Any], AfterValidator(json_safe)]
Label = Annotated[str, StringConstraints(min_length=1, max_length=MAX_LABEL_CHARS), AfterValidator(no_nul)]
ExternalId = Annotated[str, StringConstraints(min_length=1, max_length=256), AfterValidator(no_nul)]
ReviewerName = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$")]
LeaseToken = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
Reason = Annotated[str, StringConstraints(max_length=1000), AfterValidator(no_nul)]


def _policy_input(value: dict[str, Any] | str) -> dict[str, Any] | str:
    return json_safe(value) if isinstance(value, dict) else no_nul(value)


PolicyInput = Annotated[dict[str, Any] | str, AfterValidator(_policy_input)]
