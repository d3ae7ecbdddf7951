"""Drift that is caught (issue 14): banking77 with 37 intents withheld until item 5,000, then appearing.

For each seed: auto-label precision over items 5,000-6,000, where drift was detected (stream position), and
the replay's certificate fields. ``python -m bench.drift [--seeds 0 1 2 3 4] [--data ../shared/data]
[--certification anytime|per_batch]``.
Prints one JSON line per seed (not written to BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path

from policies import load_policy
from service.datasets import load_csv
from service.db import create_all, make_engine
from service.replay import ReplayConfig, run_replay
from service.scenarios import withheld_then_appearing
from service.store import SqlStore
from tools.registry import build_tools

ROOT = Path(__file__).resolve().parent.parent
SHIFT, WITHHELD, WINDOW = 5000, 37, 1000


def run_seed(data: Path, seed: int, certification: str = "anytime") -> dict:
    policy = load_policy(ROOT / "policies/examples/banking77.yaml").model_copy(update={"certification": certification})
    stream, _ = withheld_then_appearing(load_csv(data / "banking77.csv"), withheld=WITHHELD, shift=SHIFT,
                                             seed=seed)
    decisions: dict[str, tuple[str, str | None]] = {}
    with tempfile.TemporaryDirectory(prefix="labelagent-drift-") as tmp:
        engine = make_engine(f"sqlite:///{Path(tmp) / 'drift.db'}")
        create_all(engine)
        try:
            config = ReplayConfig(seed=seed, order="file", limit=SHIFT + WINDOW)
            summary = asyncio.run(run_replay(stream, policy, build_tools(policy), SqlStore(engine), config,
                                             decisions_out=decisions))
        finally:
            engine.dispose()
    window = stream[SHIFT:SHIFT + WINDOW]
    auto = [(r.label, decisions[r.item.key][1]) for r in window if decisions[r.item.key][0] == "accept"]
    right = sum(1 for truth, label in auto if truth == label)
    after = [p for p in summary["drift_detected_at"] if p >= SHIFT]
    return {"seed": seed, "certification": certification, "auto_in_window": len(auto),
            "precision_in_window": round(right / len(auto), 4) if auto else None,
            "detected_after_shift": (after[0] - SHIFT) if after else None,
            **{k: summary[k] for k in ("human_review_rate", "auto_precision", "certificate_losses", "monitor_alarms",
                                       "drift_detected_at", "items_without_certificate_after_first")}}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.drift")
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2, 3, 4])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--certification", choices=("anytime", "per_batch"), default="anytime",
                        help="the policy's certification rule (the label-free monitor belongs to anytime)")
    args = parser.parse_args(argv)
    for seed in args.seeds:
        print(json.dumps(run_seed(args.data, seed, args.certification)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
