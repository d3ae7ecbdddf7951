"""The LLM labeler in a replay, against a real HTTP server on loopback speaking OpenAI chat completions.

The server is the stdlib one of ``tests/tools/loopback.py``; it answers ``POST /v1/chat/completions`` with a
JSON ``{"label": ...}`` message and token usage, as OpenAI-compatible servers (vLLM, Ollama) do. The policy
declares the LLM at its real cost, far above the lexical tools: the planner must call it last, only on items
still open, within the budget, and the replay must report the tokens it spent.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from policies.model import LLMSpec, PlannerSpec, Policy, RetrievalSpec, TextClassifierSpec
from service.offline.datasets import LabeledItem
from service.offline.replay import ReplayConfig, run_replay
from service.settings import Settings, tool_environment
from service.store import SqlStore
from service.store.db import create_all, make_engine
from tests.tools.loopback import JsonServer, json_server
from tools.base import Item
from tools.registry import build_tools

pytest.importorskip("langchain_openai")

SPAM = ["WIN a free prize now, call {n}", "URGENT: claim your cash reward {n} today", "Free ringtone! txt {n} to stop",
        "You have been selected for a {n} holiday, reply YES"]
HAM = ["see you at lunch at {n}?", "running late, be there by {n}", "can you pick up milk, thanks {n}",
       "the meeting moved to room {n}"]
AMBIGUOUS = ["call me about the offer {n}", "did you get my message {n}"]  # lexically mixed: left open


def stream(n: int, seed: int = 0) -> list[LabeledItem]:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        kind = rng.choice(["spam", "ham", "amb"], p=[0.3, 0.6, 0.1])
        pool = SPAM if kind == "spam" else HAM if kind == "ham" else AMBIGUOUS
        label = "spam" if kind == "spam" or (kind == "amb" and i % 2) else "ham"
        text = str(rng.choice(pool)).format(n=int(rng.integers(1000, 99999)))
        rows.append(LabeledItem(Item(f"k{i}", text), label))
    return rows


def chat_completion(path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    item = json.loads(body["messages"][-1]["content"].rsplit("<item>", 1)[-1].split("</item>")[0])
    spammy = any(w in item.lower() for w in ("free", "win", "claim", "urgent", "selected", "offer"))
    return 200, {"id": "c", "object": "chat.completion", "created": 0, "model": body["model"],
                 "choices": [{"index": 0, "finish_reason": "stop", "message": {
                     "role": "assistant", "content": json.dumps({"label": "spam" if spammy else "ham"})}}],
                 "usage": {"prompt_tokens": 120, "completion_tokens": 6, "total_tokens": 126}}


def policy(budget: float, retries: int = 2) -> Policy:
    return Policy(project="llm-replay", labels=["ham", "spam"], target_precision=0.9, budget=budget,
                  min_calibration=60, retrain_every=50,
                  tools=[TextClassifierSpec(name="classifier", cost=0.0001),
                         RetrievalSpec(name="retrieval", cost=0.0001),
                         LLMSpec(name="llm", cost=0.5, examples_from="retrieval", examples=2,
                                 price_per_1k_input=0.5, price_per_1k_output=1.5, max_retries=retries)],
                  planner=PlannerSpec(cheap_cost=0.001))


def replay(tmp_path: Path, server: JsonServer, budget: float, n: int = 700, retries: int = 2) -> dict[str, Any]:
    settings = Settings(llm_base_url=f"{server.base_url}/v1", llm_model="tiny", llm_api_key="k")
    pol = policy(budget, retries)
    engine = make_engine(f"sqlite:///{tmp_path / f'replay{budget}.db'}")
    create_all(engine)
    try:
        return asyncio.run(run_replay(stream(n), pol, build_tools(pol, env=tool_environment(settings)),
                                      SqlStore(engine), ReplayConfig(batch_size=50, seed=0)))
    finally:
        engine.dispose()


def test_the_llm_is_asked_last_on_open_items_and_its_tokens_are_reported(tmp_path: Path) -> None:
    with json_server(chat_completion) as server:
        out = replay(tmp_path, server, budget=1.0)
        requests = list(server.requests)
    calls = out["tool_calls"]
    assert calls["classifier"] == out["items"], out  # the cheap classifier votes on everything
    assert 0 < calls["llm"] < 0.6 * out["items"], out  # the LLM only where the others left the item open
    assert len(requests) == calls["llm"]  # one chat completion per item asked
    path, body = requests[-1]
    assert path == "/v1/chat/completions" and body["response_format"] == {"type": "json_object"}
    usage = out["llm_usage"]["llm"]
    assert usage["calls"] == calls["llm"]
    assert usage["input_tokens"] == 120 * calls["llm"] and usage["output_tokens"] == 6 * calls["llm"]
    assert usage["price"] == pytest.approx(calls["llm"] * (0.120 * 0.5 + 0.006 * 1.5))
    assert out["unlabeled"] == 0 and out["auto_labeled"] > 0


def test_the_llm_is_never_asked_beyond_the_budget(tmp_path: Path) -> None:
    with json_server(chat_completion) as server:
        out = replay(tmp_path, server, budget=0.3, n=300)  # the lexical tools fit in it, the LLM does not
        assert server.requests == []
    assert out["tool_calls"].get("llm", 0) == 0 and "llm_usage" in out


def test_an_llm_endpoint_that_fails_is_reported_and_loses_no_item(tmp_path: Path,
                                                                   caplog: pytest.LogCaptureFixture) -> None:
    """Every chat completion answers 503: each graph run that asks the LLM sees its call fail; the worker logs it,
    the replay counts the runs, every item is still decided (escalated where the LLM's vote could have mattered)."""
    with json_server(lambda path, body: (503, {"error": {"message": "overloaded", "type": "server_error"}})) as server:
        with caplog.at_level("WARNING", logger="labelagent.runtime"):
            out = replay(tmp_path, server, budget=1.0, n=300, retries=0)  # the client's backoff would only slow it
        asked = len(server.requests)
    failures = out["tool_failures"]
    assert set(failures) == {"llm"} and 0 < failures["llm"] <= out["graph_runs"], out
    assert asked > 0 and out["unlabeled"] == 0
    warned = [r.getMessage() for r in caplog.records if "tool llm failed" in r.getMessage()]
    assert len(warned) == failures["llm"], warned[:1]
    engine = make_engine(f"sqlite:///{tmp_path / 'replay1.0.db'}")
    try:  # the audit log has one entry per failed run, written with the batch
        logged = [e for e in SqlStore(engine).audit.list_audit("llm-replay", limit=1000) if e.action == "tool.failed"]
    finally:
        engine.dispose()
    assert len(logged) == failures["llm"] and logged[0].detail["tool"] == "llm" and logged[0].actor == "replay"
    assert "overloaded" in logged[0].detail["reason"] and logged[0].detail["items"] > 0
    assert "the model failed on every item" in warned[0] and "overloaded" in warned[0], warned[0]
