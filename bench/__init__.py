"""Benchmarks: ``python -m bench`` runs every module of :data:`bench.__main__.MODULES`; ``python -m bench NAME``
runs one (``python -m bench service --help`` shows its options). Each module writes its own section of
``docs/BENCHMARKS.md`` between ``<!-- bench:NAME -->`` and ``<!-- /bench:NAME -->`` (:func:`write_section`).
"""

from __future__ import annotations

import asyncio
import functools
import os
import platform
import statistics
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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


# --- formatting shared by the reports ------------------------------------------------------------------------


def figure(value: float | None, unit: str = "", spec: str = ".1f") -> str:
    """``value`` formatted with ``spec`` and followed by ``unit`` (``12.3``, ``12.3 ms``); ``n/a`` when not measured."""
    return "n/a" if value is None else f"{value:{spec}}{unit}"


def mean_sd(values: Sequence[float], spec: str) -> str:
    """The mean and standard deviation of ``values`` formatted with ``spec`` (``0.95 ± 0.01``): the value alone
    when there is one, ``n/a`` when there is none."""
    if not values:
        return "n/a"
    if len(values) == 1:
        return format(values[0], spec)
    return f"{format(statistics.fmean(values), spec)} ± {format(statistics.stdev(values), spec)}"


def timed(fn: Callable[..., Any], add: Callable[[float], None],
          clock: Callable[[], float] = time.perf_counter) -> Callable[..., Any]:
    """``fn`` wrapped so that each call's ``clock`` time (awaited, for a coroutine function) is passed to ``add``."""
    if asyncio.iscoroutinefunction(fn):
        @functools.wraps(fn)
        async def run_async(*args: Any, **kwargs: Any) -> Any:
            t = clock()
            try:
                return await fn(*args, **kwargs)
            finally:
                add(clock() - t)
        return run_async

    @functools.wraps(fn)
    def run(*args: Any, **kwargs: Any) -> Any:
        t = clock()
        try:
            return fn(*args, **kwargs)
        finally:
            add(clock() - t)
    return run
