"""Outbound tool requests (finding 1 of issue 17): a policy's tool endpoints come from the operator's allowlist,
the deployment's LLM key goes only to the deployment's LLM endpoint, every tool request passes the SSRF guard, and
no response body reaches the evidence. Real loopback servers; the guard is the one image fetching uses."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import httpx
import pytest

from policies import PolicyError, ToolError
from policies.model import LLMSpec, RemoteModelSpec, WeatherSpec
from tests.factories import make_policy
from tools.base import Batch, Item, ToolContext
from tools.environment import ToolEnvironment
from tools.llm import LLMTool
from tools.outbound import GuardedTransport, check_policy_endpoints, endpoint_allowed
from tools.remote import RemoteModelTool
from tools.weather import WeatherTool

from .loopback import JsonServer, json_server
from .test_llm_openai import chat_completion

LABELS = ("ham", "spam")


@pytest.fixture
def backend() -> Iterator[JsonServer]:
    with json_server(lambda _p, _b: (200, {"results": []})) as running:
        yield running


def test_a_policy_url_outside_the_allowlist_cannot_build_a_tool(backend: JsonServer) -> None:
    url = f"{backend.base_url}/predict"
    with pytest.raises(ToolError, match="not allowed by this deployment"):
        RemoteModelTool(RemoteModelSpec(name="r", url=url), LABELS)
    with pytest.raises(ToolError, match="not allowed by this deployment"):
        WeatherTool(WeatherSpec(name="wx", archive_url=url), LABELS)
    with pytest.raises(ToolError, match="not allowed by this deployment"):
        LLMTool(LLMSpec(name="llm", base_url=url, model="m"), LABELS)
    assert backend.requests == []
    env = ToolEnvironment(tool_endpoints=(url,))
    RemoteModelTool(RemoteModelSpec(name="r", url=url), LABELS, env=env)  # allowed by the operator: builds


def test_endpoint_matching_is_by_scheme_host_port_and_path() -> None:
    allowed = ("http://ml.internal:9090/predict",)
    assert endpoint_allowed("http://ml.internal:9090/predict", allowed)
    assert endpoint_allowed("http://ML.internal:9090/predict/v2", allowed)
    assert endpoint_allowed("http://ls:secret@ml.internal:9090/predict", allowed)  # its own Basic credentials
    for url in ("http://ml.internal:9091/predict", "https://ml.internal:9090/predict", "http://ml.internal/predict",
                "http://ml.internal:9090/predictx", "http://ml.internal:9090/", "http://ml.internal:9090@evil.com/predict",
                "http://ml.internal.evil.com:9090/predict", "file:///etc/passwd"):
        assert not endpoint_allowed(url, allowed), url


def test_check_policy_endpoints_names_every_refused_tool() -> None:
    policy = make_policy("p").model_copy(update={"tools": [
        RemoteModelSpec(name="r", url="http://169.254.169.254/latest"), LLMSpec(name="l", base_url="http://10.0.0.1/v1"),
    ]})
    with pytest.raises(PolicyError, match=r"'r': http://169.254.169.254/latest.*'l': http://10.0.0.1/v1"):
        check_policy_endpoints(policy, ToolEnvironment().endpoints())


def test_the_guard_refuses_private_addresses_before_connecting(backend: JsonServer) -> None:
    async def go(allow: frozenset[str]) -> int:
        async with httpx.AsyncClient(transport=GuardedTransport(allow), trust_env=False) as client:
            return (await client.post(f"{backend.base_url}/predict", json={})).status_code

    with pytest.raises(ToolError, match="loopback"):
        asyncio.run(go(frozenset()))
    assert backend.requests == []  # refused before any connection
    port = backend.base_url.rsplit(":", 1)[1]
    assert asyncio.run(go(frozenset({f"127.0.0.1:{port}"}))) == 200
    assert backend.headers[0]["host"] == f"127.0.0.1:{port}"


def test_a_remote_model_redirect_to_an_internal_host_is_not_followed() -> None:
    with json_server(lambda _p, _b: (200, {"results": []})) as internal:
        def redirect(_p: str, _b: dict) -> tuple[int, dict]:
            return 307, {}

        with json_server(redirect) as public:
            url = f"{public.base_url}/predict"
            tool = RemoteModelTool(RemoteModelSpec(name="r", url=url, max_retries=0), LABELS,
                                   env=ToolEnvironment(tool_endpoints=(url,)))
            with pytest.raises(ToolError):
                asyncio.run(tool.predict(Batch([Item("a", "x")]), ToolContext(LABELS)))
        assert internal.requests == []


def test_a_refused_status_body_never_reaches_the_evidence() -> None:
    secret = "root:x:0:0:SECRET-INTERNAL-BODY"
    with json_server(lambda _p, _b: (403, {"detail": secret})) as server:
        url = f"{server.base_url}/predict"
        tool = RemoteModelTool(RemoteModelSpec(name="r", url=url, max_retries=0), LABELS,
                               env=ToolEnvironment(tool_endpoints=(url,)))
        with pytest.raises(ToolError) as raised:
            asyncio.run(tool.predict(Batch([Item("a", "x")]), ToolContext(LABELS)))
    assert "HTTP 403" in str(raised.value) and "SECRET" not in str(raised.value)


def test_the_deployment_llm_key_goes_only_to_the_deployment_llm_endpoint() -> None:
    with json_server(chat_completion) as own, json_server(chat_completion) as other:
        env = ToolEnvironment(llm_base_url=f"{own.base_url}/v1", llm_model="tiny", llm_api_key="sk-deployment",
                              tool_endpoints=(f"{other.base_url}/v1",))
        items = Batch([Item("a", "free money")])
        default = LLMTool(LLMSpec(name="llm"), LABELS, env=env)
        asyncio.run(default.predict(items, ToolContext(LABELS)))
        named = LLMTool(LLMSpec(name="llm", base_url=f"{other.base_url}/v1"), LABELS, env=env)
        asyncio.run(named.predict(items, ToolContext(LABELS)))
    assert own.headers[0]["authorization"] == "Bearer sk-deployment"
    assert len(other.requests) == 1 and "sk-deployment" not in other.headers[0].get("authorization", "")
