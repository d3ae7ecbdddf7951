"""The remote model tool against a loopback Label Studio ML backend / generic JSON server (stdlib)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from policies import ToolError
from policies.model import RemoteModelSpec
from tools.base import Batch, Item, ToolContext, Votes
from tools.environment import ToolEnvironment
from tools.remote import RemoteModelTool

from .loopback import JsonServer

LABELS = ("ham", "spam")


def allowing(spec: RemoteModelSpec) -> ToolEnvironment:
    """A deployment whose operator allows the spec's (loopback) endpoint."""
    return ToolEnvironment(tool_endpoints=(spec.url,))
Answer = Callable[[dict[str, Any]], tuple[int, dict[str, Any]]]


def label_studio(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
    results = []
    for task in body["tasks"]:
        text = task["data"]["text"]
        label = "spam" if "free" in text else ("eggs" if "eggs" in text else "ham")
        results.append({"result": [{"from_name": "label", "to_name": "text", "type": "choices",
                                    "value": {"choices": [label]}}], "score": 0.9, "model_version": "ls-v3"})
    return 200, {"results": results}


class Backend(JsonServer):
    """A Label Studio ML backend or generic JSON endpoint at ``/predict``, answering with ``answer(body)``."""

    def __init__(self, answer: Callable[[dict[str, Any]], tuple[int, dict[str, Any]]]) -> None:
        super().__init__(lambda _path, body: answer(body))
        self.url = f"{self.base_url}/predict"


@pytest.fixture
def serve() -> Iterator[Callable[[Answer], Backend]]:
    started: list[Backend] = []

    def start(answer: Answer) -> Backend:
        started.append(Backend(answer))
        return started[-1]

    yield start
    for backend in started:
        backend.close()


def predict(tool: RemoteModelTool, items: list[Item]) -> Votes:
    return asyncio.run(tool.predict(Batch(items), ToolContext(LABELS)))


ITEMS = [Item("a", "free cash", {"lat": 1.5}), Item("b", "lunch?"), Item("c", "green eggs")]


def test_label_studio_backend_votes(serve: Callable[[Answer], Backend]) -> None:
    backend = serve(label_studio)
    tool = RemoteModelTool(spec := RemoteModelSpec(name="ls", url=backend.url, max_batch=2), LABELS, env=allowing(spec))
    votes = predict(tool, ITEMS)
    assert votes.abstain.tolist() == [False, False, True]
    assert votes.probs[0].tolist() == pytest.approx([0.1, 0.9]) and votes.probs[1].tolist() == pytest.approx([0.9, 0.1])
    assert "not in the label set" in votes.evidence[2]
    assert votes.model_version == "ls-v3"
    assert len(backend.bodies) == 2  # chunks of max_batch
    first = next(b for b in backend.bodies if len(b["tasks"]) == 2)  # the chunks may arrive in any order
    task = first["tasks"][0]
    assert task["id"] == 0 and task["data"] == {"lat": 1.5, "text": "free cash", "external_id": "a"}


def test_generic_json_endpoint(serve: Callable[[Answer], Backend]) -> None:
    def answer(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        preds = [{"distribution": {"ham": 1, "spam": 3}}, {"label": "ham"}, {"label": None}]
        return 200, {"predictions": preds[:len(body["items"])], "model_version": "g1"}

    backend = serve(answer)
    tool = RemoteModelTool(spec := RemoteModelSpec(name="g", url=backend.url, protocol="json", strength=0.7), LABELS,
                           env=allowing(spec))
    votes = predict(tool, ITEMS)
    assert votes.probs[0].tolist() == pytest.approx([0.25, 0.75])
    assert votes.probs[1].tolist() == pytest.approx([0.7, 0.3])
    assert votes.abstain.tolist() == [False, False, True] and votes.model_version == "g1"
    assert backend.bodies[0]["items"][0] == {"id": "a", "text": "free cash", "metadata": {"lat": 1.5}}


def test_retries_5xx_then_succeeds(serve: Callable[[Answer], Backend]) -> None:
    calls = iter([(503, {"error": "busy"}), (429, {}), None])

    def answer(body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        return next(calls) or label_studio(body)

    backend = serve(answer)
    tool = RemoteModelTool(spec := RemoteModelSpec(name="ls", url=backend.url, backoff_seconds=0.0), LABELS,
                           env=allowing(spec))
    votes = predict(tool, ITEMS[:1])
    assert votes.abstain.tolist() == [False] and tool.requests == 3


def test_down_backend_raises_and_breaker_opens(serve: Callable[[Answer], Backend]) -> None:
    backend = serve(lambda body: (500, {"error": "boom"}))
    spec = RemoteModelSpec(name="ls", url=backend.url, backoff_seconds=0.0, max_retries=1, breaker_failures=2,
                           breaker_reset_seconds=600)
    tool = RemoteModelTool(spec, LABELS, env=allowing(spec))
    with pytest.raises(ToolError, match="unavailable: HTTP 500"):
        predict(tool, ITEMS)
    with pytest.raises(ToolError, match="circuit open"):
        predict(tool, ITEMS)
    assert len(backend.bodies) == 2  # the open breaker sent nothing


def test_refused_connection_and_4xx() -> None:
    spec = RemoteModelSpec(name="ls", url="http://127.0.0.1:9/predict", backoff_seconds=0.0, max_retries=0)
    with pytest.raises(ToolError, match="unavailable"):
        predict(RemoteModelTool(spec, LABELS, env=allowing(spec)), ITEMS)


def test_bad_request_is_not_retried(serve: Callable[[Answer], Backend]) -> None:
    backend = serve(lambda body: (400, {"error": "bad"}))
    tool = RemoteModelTool(spec := RemoteModelSpec(name="ls", url=backend.url, backoff_seconds=0.0), LABELS,
                           env=allowing(spec))
    with pytest.raises(ToolError, match="HTTP 400"):
        predict(tool, ITEMS)
    assert tool.requests == 1
