"""Benchmarks: ``python -m bench`` runs every module of :data:`bench.__main__.MODULES`; ``python -m bench NAME``
runs one (``python -m bench service --help`` shows its options). Each module writes its own section of
``docs/BENCHMARKS.md`` between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->`` (:func:`write_section`).
"""

from __future__ import annotations

import os
import platform
from datetime import UTC, datetime
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = ROOT / "docs" / "BENCHMARKS.md"


def write_section(name: str, body: str, path: Path = BENCHMARKS) -> None:
    """Replace the text between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->`` (append it when absent)."""
    start, end = f"<!-- bench:{name} -->", f"<!-- /bench:{name} -->"
    text = path.read_text(encoding="utf-8") if path.exists() else "# Benchmarks\n"
    block = f"{start}\n{body.rstrip()}\n{end}"
    if start in text and end in text:
        head, rest = text.split(start, 1)
        _, tail = rest.split(end, 1)
        text = head + block + tail
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")


def machine_info() -> str:
    return (f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, Python {platform.python_version()}, "
            f"{platform.machine()} with {os.cpu_count()} CPUs, {platform.platform(terse=True)}")
