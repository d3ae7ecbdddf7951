"""The quality benchmark's storms path: the baselines run the policy's weather tool (against the loopback
Open-Meteo server) before the classifier, on copies of the items, and degrade without it."""

from __future__ import annotations

import asyncio
import csv

import numpy as np

from bench.baselines import classifier_loop, enrich, enrichment_policy
from bench.quality import DATASETS, Dataset, with_endpoints
from policies import Policy, load_policy
from policies.io import EXAMPLES_DIR
from service.offline.datasets import load_csv
from service.offline.replay import shuffled
from service.offline.testing.open_meteo import allowing, load_storm_table, serving
from tests.factories import dataset_path
from tools.base import Batch, ToolContext
from tools.registry import build_tools

N = 300


def weather_update(policy: Policy, **fields: object) -> Policy:
    tools = [t.model_copy(update=fields) if t.kind == "weather" else t for t in policy.tools]
    return policy.model_copy(update={"tools": tools})


def test_enrichment_policy_keeps_only_enabled_enrichment_tools() -> None:
    weather = enrichment_policy(load_policy(EXAMPLES_DIR / "storms_weather.yaml"))
    assert [t.kind for t in weather.tools] == ["weather"]
    assert enrichment_policy(load_policy(EXAMPLES_DIR / "sms_spam.yaml")).tools == []
    assert "storms" in {d.name for d in DATASETS}


def test_baselines_see_the_served_weather_and_leave_the_dataset_untouched() -> None:
    path = dataset_path("storms.csv")
    rows = load_csv(path)
    stream = shuffled(rows, 0, N)
    with open(path, newline="", encoding="utf-8") as fh:
        wind = {f"row-{n:06d}": float(r["wind"]) for n, r in enumerate(csv.DictReader(fh), start=1)}
    with serving(load_storm_table(path)) as server:
        policy = with_endpoints(load_policy(EXAMPLES_DIR / "storms_weather.yaml"), server)
        policy = weather_update(policy, backoff_seconds=0.0)
        batch = Batch([r.item for r in stream[:50]])
        (weather,) = build_tools(enrichment_policy(policy), env=allowing(policy))
        failed = asyncio.run(enrich([weather], batch, ToolContext(tuple(policy.labels), np.random.default_rng(0))))
        assert failed == 0
        # The classifier's wx_ feature is the storm's own wind at its track point (knots, as the policy asks).
        assert [it.metadata["wx_wind_speed_10m"] for it in batch.items] == [wind[it.key] for it in batch.items]
        for item in batch.items:  # undo: the loop below must enrich its own copies
            del item.metadata["wx_wind_speed_10m"], item.metadata["wx_pressure_msl"]

        before = server.state.requests
        res = asyncio.run(classifier_loop(stream, policy, "text_classifier", strategy="pre_annotation", seed=0))
        assert server.state.requests - before >= N // 2  # one request per place and day, few shared
        assert res["items"] == N and res["enrich_failures"] == 0
        assert res["human_reviews"] + res["auto_labeled"] == N and res["fits"] > 0
        server.stop()
        down = weather_update(policy, max_retries=0)
        res = asyncio.run(classifier_loop(stream, down, "text_classifier", strategy="audit_calibrated", seed=0))
    assert res["items"] == N and res["enrich_failures"] > 0  # the API down: the classifier goes on without it
    assert all(not any(k.startswith("wx_") for k in r.item.metadata) for r in rows)


def test_a_dataset_caps_seeds_and_items_but_never_raises_them() -> None:
    capped = Dataset("d", "d.csv", "p.yaml", "text_classifier", max_seeds=1, max_items=5000)
    assert capped.plan([0, 1, 2], None) == ([0], 5000)
    assert capped.plan([0, 1, 2], 300) == ([0], 300)
    assert Dataset("d", "d.csv", "p.yaml", "text_classifier").plan([0, 1], None) == ([0, 1], None)
