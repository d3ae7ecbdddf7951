"""Drift that is caught (issue 14): banking77 with 37 intents withheld until item 5,000, then appearing.

For each seed: auto-label precision over items 5,000-6,000, where drift was detected (stream position), and
the replay's certificate fields; then where auto-labeling resumed after the alarm and how precise it was over the
next ``TAIL`` items (the summary's fields cover the whole replay, window and tail).
``python -m bench.drift [--seeds 0 1 2 3 4] [--data ../shared/data] [--certification RULE]`` (any of the policy's
rules: ``per_batch``, ``anytime``, ``betting``).
Prints one JSON line per seed (not written to BENCHMARKS.md).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path

from policies import CERTIFICATION_RULES, DEFAULT_CERTIFICATION, load_policy
from service.offline.datasets import LabeledItem, load_csv
from service.offline.replay import ReplayConfig, run_replay
from service.offline.scenarios import withheld_then_appearing
from service.store import SqlStore
from service.store.db import create_all, make_engine
from tools.registry import build_tools

ROOT = Path(__file__).resolve().parent.parent
SHIFT, WITHHELD, WINDOW, BATCH = 5000, 37, 1000, 256
TAIL = 2000  # items replayed after the window: where auto-labeling resumes after the alarm, and how precisely


def run_seed(data: Path, seed: int, certification: str = DEFAULT_CERTIFICATION) -> dict:
    policy = load_policy(ROOT / "policies/examples/banking77.yaml").model_copy(update={"certification": certification})
    stream, _ = withheld_then_appearing(load_csv(data / "banking77.csv"), withheld=WITHHELD, shift=SHIFT,
                                             seed=seed)
    decisions: dict[str, tuple[str, str | None]] = {}
    with tempfile.TemporaryDirectory(prefix="labelagent-drift-") as tmp:
        engine = make_engine(f"sqlite:///{Path(tmp) / 'drift.db'}")
        create_all(engine)
        try:
            config = ReplayConfig(batch_size=BATCH, seed=seed, order="file", limit=SHIFT + WINDOW + TAIL)
            summary = asyncio.run(run_replay(stream, policy, build_tools(policy), SqlStore(engine), config,
                                             decisions_out=decisions))
        finally:
            engine.dispose()
    def auto_labels(lo: int, hi: int) -> list[tuple[str, str | None]]:  # (truth, auto label) of items lo..hi
        return [(r.label, decisions[r.item.key][1]) for r in stream[lo:hi] if decisions[r.item.key][0] == "accept"]

    def tally(labels: list[tuple[str, str | None]]) -> list[int]:  # [auto, right]
        return [len(labels), sum(truth == label for truth, label in labels)]

    auto = auto_labels(SHIFT, SHIFT + WINDOW)
    right = tally(auto)[1]
    alarms = [_alarm_bounds(stream, decisions, start, summary["items"]) for start in summary["drift_detected_at"]]
    cut = next((hi for _, hi in alarms if hi > SHIFT), SHIFT + WINDOW)
    parts = {"before_alarm": auto_labels(SHIFT, cut), "after_alarm": auto_labels(cut, SHIFT + WINDOW)}
    after = [hi for lo, hi in alarms if hi > SHIFT]
    resumed = next((i for i in range(cut, len(stream)) if stream[i].item.key in decisions
                    and decisions[stream[i].item.key][0] == "accept"), None)
    return {"seed": seed, "certification": certification, "auto_in_window": len(auto),
            "precision_in_window": round(right / len(auto), 4) if auto else None,
            **{f"auto_{k}": tally(v) for k, v in parts.items()},  # [auto, right]
            "alarms_between": alarms, "false_alarm": any(hi <= SHIFT for _, hi in alarms),
            "detected_within": (after[0] - SHIFT) if after else None,
            "auto_resumed_at": resumed,  # the first auto label after the alarm (stream position)
            "auto_after_window": tally(auto_labels(SHIFT + WINDOW, SHIFT + WINDOW + TAIL)),  # [auto, right], next TAIL
            **{k: summary[k] for k in ("human_review_rate", "auto_precision", "certificate_losses", "monitor_alarms",
                                       "drift_detected_at", "items_without_certificate_after_first")}}


def _alarm_bounds(stream: Sequence[LabeledItem], decisions: dict[str, tuple[str, str | None]], start: int,
                  items: int) -> tuple[int, int]:
    """The stream positions between which an alarm fell: the replay reports the start of the batch in which the
    monitor fired; the graph stops auto-labeling at the alarm, so it came after the batch's last auto label (lower
    bound) and before the batch's end (upper bound: the next batch start, at most ``BATCH`` on)."""
    end = min(start + BATCH, items)
    accepted = [i for i in range(start, end) if decisions[stream[i].item.key][0] == "accept"]
    return (accepted[-1] + 1 if accepted else start), end


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.drift")
    parser.add_argument("--seeds", type=int, nargs="*", default=[0, 1, 2, 3, 4])
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    parser.add_argument("--certification", choices=CERTIFICATION_RULES, default=DEFAULT_CERTIFICATION,
                        help=f"the policy's certification rule (default: the policy's, {DEFAULT_CERTIFICATION})")
    args = parser.parse_args(argv)
    for seed in args.seeds:
        print(json.dumps(run_seed(args.data, seed, args.certification)), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
