"""The input sanitizer (service.api.schemas.common) on its own: lone surrogates, NUL, depth without recursion."""

from __future__ import annotations

import json

import pytest

from service.api.schemas.common import MAX_METADATA_BYTES, clean_text, json_safe, metadata_safe


def test_the_sanitizer_itself() -> None:
    for bad in ("a\x00b", "a\ud800b", "\udfff"):
        with pytest.raises(ValueError):
            clean_text(bad)
    assert clean_text("a\U0001f600b") == "a\U0001f600b"
    with pytest.raises(ValueError, match="nested deeper"):
        json_safe(json.loads("[" * 200 + "]" * 200))  # a stack, not recursion
    with pytest.raises(ValueError):
        json_safe({"a\ud800": 1})


def test_metadata_size_limit_counts_utf8_bytes() -> None:
    metadata_safe({"a": "x" * (MAX_METADATA_BYTES - 20)})
    with pytest.raises(ValueError, match="over the limit"):
        metadata_safe({"a": "é" * (MAX_METADATA_BYTES // 2)})
