"""Restarts keep the certificate (issue 14): replay a stream to item N on a database, stop, start a fresh worker on
the same database as the runtime does (``service.runtime.certified.restore_labeler``), decide the next batch;
then a second worker joins and decides the batch after that.

``python -m bench.restart [--dataset banking77.csv] [--policy banking77] [--limit 8000] [--seeds 0]
[--certification per_batch|anytime|betting] [--data ../shared/data]`` prints one JSON line per seed: the persisted
threshold, and for each started worker its first batch's threshold, auto labels, snapshot id and the seconds its
restore took.
The suite runs the same function on a small sms_spam slice (``tests/service/test_restart.py``).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from agent.runner import BatchLabeler
from policies import CERTIFICATION_RULES, DEFAULT_CERTIFICATION, Policy, example_policy
from service.offline.datasets import LabeledItem, load_csv
from service.offline.replay import ReplayConfig, run_replay, shuffled
from service.runtime.certified import restore_labeler
from service.runtime.cycle import ProjectWorker
from service.runtime.feedback import AnswerFeed
from service.store import SqlStore
from service.store.db import create_all, make_engine
from tools.registry import build_tools

ROOT = Path(__file__).resolve().parent.parent


async def start_and_decide(store: SqlStore, policy: Policy, batch: Sequence[LabeledItem], *, name: str,
                           seed: int) -> dict[str, Any]:
    """A fresh worker on ``policy.project`` (restored from the store, as ``service.runtime`` builds one), then one
    claim and one graph run over ``batch`` (ingested first)."""
    started = time.perf_counter()
    labeler = BatchLabeler(policy, build_tools(policy), seed=seed)
    stored = restore_labeler(store, policy.project, labeler,
                             AnswerFeed(store, policy.project, lag_seconds=0.0).start())
    restore_s = time.perf_counter() - started
    worker = ProjectWorker(store, policy.project, labeler, name=name, batch_size=len(batch))
    store.items.ingest(policy.project, [r.item for r in batch])
    token, items = store.items.claim_batch(policy.project, worker=name, size=len(batch))
    outcome = await worker.run_claimed(token, items)
    assert outcome.result is not None and outcome.record is not None
    result = outcome.result
    return {"worker": name, "restored_snapshot": None if stored is None else stored.id,
            "restored_threshold": None if stored is None else stored.threshold,
            "threshold": result.threshold, "snapshot_id": result.snapshot_id, "items": len(items),
            "auto_labels": len(result.by_action("accept")), "labeled": outcome.record.labeled,
            "restore_seconds": round(restore_s, 2)}


def replay_then_restart(rows: Sequence[LabeledItem], policy: Policy, store: SqlStore, *, limit: int, seed: int,
                        batch_size: int = 256) -> dict[str, Any]:
    """Replay the first ``limit`` items of the seeded stream, then a restarted worker and a joining one."""
    config = ReplayConfig(batch_size=batch_size, seed=seed, limit=limit)
    summary = asyncio.run(run_replay(rows, policy, build_tools(policy), store, config))
    stored = store.learning.latest_snapshot(policy.project, policy.version)
    rest = shuffled(rows, seed, None)[limit:]
    restarted = asyncio.run(start_and_decide(store, policy, rest[:batch_size], name="restarted", seed=seed))
    joining = asyncio.run(start_and_decide(store, policy, rest[batch_size:2 * batch_size], name="joining",
                                           seed=seed + 1))
    return {"items_replayed": summary["items"], "replay_threshold": summary["threshold"],
            "persisted_snapshot": None if stored is None else stored.id,
            "persisted_threshold": None if stored is None else stored.threshold,
            "restarted": restarted, "joining": joining}


def run_seed(data: Path, dataset: str, policy_name: str, limit: int, seed: int, certification: str) -> dict[str, Any]:
    policy = example_policy(policy_name).model_copy(update={"certification": certification})
    with tempfile.TemporaryDirectory(prefix="labelagent-restart-") as tmp:
        engine = make_engine(f"sqlite:///{Path(tmp) / 'restart.db'}")
        create_all(engine)
        try:
            out = replay_then_restart(load_csv(data / dataset), policy, SqlStore(engine), limit=limit, seed=seed)
        finally:
            engine.dispose()
    return {"dataset": dataset, "seed": seed, "certification": certification, **out}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.restart")
    parser.add_argument("--dataset", default="banking77.csv")
    parser.add_argument("--policy", default="banking77")
    parser.add_argument("--limit", type=int, default=8000)
    parser.add_argument("--seeds", type=int, nargs="*", default=[0])
    parser.add_argument("--certification", choices=CERTIFICATION_RULES, default=DEFAULT_CERTIFICATION)
    parser.add_argument("--data", type=Path, default=ROOT.parent / "shared" / "data")
    args = parser.parse_args(argv)
    for seed in args.seeds:
        print(json.dumps(run_seed(args.data, args.dataset, args.policy, args.limit, seed, args.certification)),
              flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
