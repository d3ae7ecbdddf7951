"""Storms replay with the weather tool against the loopback Open-Meteo server: it helps; a dead API loses nothing."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest

from policies import load_policy
from policies.io import EXAMPLES_DIR
from service.offline.datasets import load_csv
from service.offline.replay import ReplayConfig, run_replay
from service.offline.testing.open_meteo import RunningServer, allowing, load_storm_table, serving
from service.store import SqlStore
from service.store.db import create_all, make_engine
from tests.factories import dataset_path
from tools.registry import build_tools

LIMIT = 1500


def storms_policy(server: RunningServer | None, **weather: Any):  # type: ignore[no-untyped-def]
    if server is None:
        return load_policy(EXAMPLES_DIR / "storms.yaml")
    policy = load_policy(EXAMPLES_DIR / "storms_weather.yaml")
    spec = policy.tools[0].model_copy(update={"archive_url": server.archive_url, "forecast_url": server.forecast_url,
                                              "backoff_seconds": 0.0, **weather})
    return policy.model_copy(update={"tools": [spec, *policy.tools[1:]]})


def replay(tmp_path: Path, policy, on_batch=None) -> tuple[dict, SqlStore, Any]:  # type: ignore[no-untyped-def]
    rows = load_csv(dataset_path("storms.csv"))
    tmp_path.mkdir(parents=True, exist_ok=True)
    engine = make_engine(f"sqlite:///{tmp_path / 'replay.db'}")
    create_all(engine)
    store = SqlStore(engine)
    tools = build_tools(policy, env=allowing(policy))
    summary = asyncio.run(run_replay(rows, policy, tools, store, ReplayConfig(batch_size=128, limit=LIMIT),
                                     on_batch=on_batch))
    return summary, store, tools


def test_storm_items_do_not_carry_the_answer() -> None:
    rows = load_csv(dataset_path("storms.csv"))
    assert set(rows[0].item.metadata) == {"lat", "lon", "datetime"}


@pytest.mark.slow
def test_weather_lowers_reviews_and_raises_pooled_accuracy(tmp_path: Path) -> None:
    with serving(load_storm_table(dataset_path("storms.csv"))) as server:
        with_wx, _, _ = replay(tmp_path / "wx", storms_policy(server))
    without, _, _ = replay(tmp_path / "base", storms_policy(None))
    assert with_wx["unlabeled"] == without["unlabeled"] == 0
    assert with_wx["human_reviews"] < without["human_reviews"]
    assert with_wx["aggregator"]["accuracy"] > without["aggregator"]["accuracy"] + 0.1
    assert with_wx["auto_precision"] is not None and with_wx["auto_precision"] >= 0.9


def test_server_stopped_mid_run_loses_nothing(tmp_path: Path) -> None:
    seen = [0]
    with serving(load_storm_table(dataset_path("storms.csv"))) as server:

        def stop_after_two_chunks(n: int) -> None:
            seen[0] += n
            if seen[0] >= 256 and server.thread.is_alive():
                server.stop()

        policy = storms_policy(server, max_retries=1, breaker_failures=3, breaker_reset_seconds=3600)
        summary, store, tools = replay(tmp_path, policy, stop_after_two_chunks)
    assert summary["items"] == LIMIT and summary["unlabeled"] == 0
    assert summary["auto_labeled"] + summary["human_reviews"] == LIMIT
    assert tools[0].client.breaker.state == "open"
    keys = [f"row-{i:06d}" for i in range(1, 19538)]
    votes = store.learning.load_votes(policy.project, keys)
    evidence = [v.evidence for vs in votes.values() for v in vs if v.tool == "weather"]
    assert any("wind_speed_10m" in e for e in evidence)  # before the stop
    assert any("weather failed: weather unavailable" in e and ("circuit open" in e or "ConnectError" in e)
               for e in evidence)  # after it
