"""Shared field types and the one input sanitizer: strings the databases accept (valid Unicode: no NUL character, no
lone UTF-16 surrogate; bounded length), JSON values that are JSON (finite numbers, bounded depth and size), names,
labels and lease tokens. HTTP bodies, broker messages and Label Studio imports all go through :func:`clean_text` and
:func:`json_safe` (``no_nul`` is the old name of :func:`clean_text`)."""

from __future__ import annotations

import json
import math
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, StringConstraints

MAX_JSON_DEPTH = 32
MAX_JSON_VALUES = 100_000  # strings, numbers, keys... in one JSON value (metadata, a Label Studio task's data)
MAX_METADATA_BYTES = 256 * 1024  # an item's metadata, as compact JSON: every claim returns it whole
MAX_TEXT_CHARS = 1_000_000  # the longest string the sanitizer lets through anywhere (fields may say less)
MAX_LABEL_CHARS = 128  # a label's longest spelling (the label columns hold 128)


def clean_text(value: str) -> str:
    """``value`` when both databases can store it: no NUL, no lone UTF-16 surrogate, at most ``MAX_TEXT_CHARS``."""
    if "\x00" in value:
        raise ValueError("must not contain NUL (\\u0000) characters")
    if len(value) > MAX_TEXT_CHARS:
        raise ValueError(f"is longer than {MAX_TEXT_CHARS} characters")
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError("must be valid Unicode: it holds a lone UTF-16 surrogate (\\ud800-\\udfff); send the "
                             "character's full surrogate pair, or the character itself") from None
    return value


no_nul = clean_text  # the name the checks had before lone surrogates were refused too


def json_safe(value: Any) -> Any:
    """``value`` if both databases can store it as JSON: finite numbers, clean strings and keys (:func:`clean_text`),
    at most ``MAX_JSON_DEPTH`` levels and ``MAX_JSON_VALUES`` values. Walks with a stack, never recursion."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    seen = 0
    while stack:
        node, depth = stack.pop()
        seen += 1
        if seen > MAX_JSON_VALUES:
            raise ValueError(f"holds more than {MAX_JSON_VALUES} values")
        if isinstance(node, str):
            clean_text(node)
        elif isinstance(node, float) and not math.isfinite(node):
            raise ValueError("holds NaN or Infinity, which JSON cannot carry; send null or a number")
        elif isinstance(node, dict | list):
            if depth >= MAX_JSON_DEPTH:
                raise ValueError(f"is nested deeper than {MAX_JSON_DEPTH} levels")
            if isinstance(node, dict):
                for key in node:
                    clean_text(str(key))
                stack.extend((item, depth + 1) for item in node.values())
            else:
                stack.extend((item, depth + 1) for item in node)
    return value


def metadata_safe(value: dict[str, Any]) -> dict[str, Any]:
    """:func:`json_safe`, and at most ``MAX_METADATA_BYTES`` as compact JSON."""
    json_safe(value)
    size = len(json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode("utf-8"))
    if size > MAX_METADATA_BYTES:
        raise ValueError(f"is {size} bytes as JSON, over the limit of {MAX_METADATA_BYTES}; keep large data elsewhere "
                         "and send a reference")
    return value


class Request(BaseModel):
    """Base of request bodies: unknown fields are rejected (a client cannot set server-owned fields)."""

    model_config = ConfigDict(extra="forbid")


SafeText = Annotated[str, AfterValidator(clean_text)]
JsonObject = Annotated[dict[str, Any], AfterValidator(json_safe)]
Metadata = Annotated[dict[str, Any], AfterValidator(metadata_safe)]
Label = Annotated[str, StringConstraints(min_length=1, max_length=MAX_LABEL_CHARS), AfterValidator(clean_text)]
ExternalId = Annotated[str, StringConstraints(min_length=1, max_length=256), AfterValidator(clean_text)]
ReviewerName = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[^\x00-\x1f\x7f]+$"),
                         AfterValidator(clean_text)]
LeaseToken = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
Reason = Annotated[str, StringConstraints(max_length=1000), AfterValidator(clean_text)]


def _policy_input(value: dict[str, Any] | str) -> dict[str, Any] | str:
    return json_safe(value) if isinstance(value, dict) else clean_text(value)


PolicyInput = Annotated[dict[str, Any] | str, AfterValidator(_policy_input)]
