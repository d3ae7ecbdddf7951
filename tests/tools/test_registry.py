"""build_tools: enabled tools in policy order from a plain kind -> factory mapping."""

from __future__ import annotations

import io
from types import SimpleNamespace

import pytest
from PIL import Image

from policies.exceptions import ToolError
from policies.model import (
    TOOL_KINDS,
    ImageClassifierSpec,
    Policy,
    RandomSpec,
    RetrievalSpec,
    Rule,
    RulesSpec,
    TextClassifierSpec,
    WeatherSpec,
)
from tools.base import Batch, Item
from tools.environment import ToolEnvironment
from tools.image_classifier import image_features
from tools.images import ImageLimits
from tools.random_voter import RandomVoter
from tools.registry import FACTORIES, build_tool, build_tools
from tools.retrieval import Retrieval
from tools.rules import Rules
from tools.text_classifier import TextClassifier


def policy(**overrides: object) -> Policy:
    fields: dict[str, object] = {
        "project": "demo",
        "labels": ["ham", "spam"],
        "target_precision": 0.95,
        "tools": [
            RulesSpec(name="rules", rules=[Rule(label="spam", keywords=["free"])]),
            TextClassifierSpec(name="clf"),
            RandomSpec(name="random", enabled=False),
            RetrievalSpec(name="knn", k=5),
        ],
    }
    fields.update(overrides)
    return Policy(**fields)


def test_builds_enabled_tools_in_policy_order() -> None:
    tools = build_tools(policy())
    assert [type(t) for t in tools] == [Rules, TextClassifier, Retrieval]
    assert [t.name for t in tools] == ["rules", "clf", "knn"]
    assert tools[2].spec.k == 5 and tools[1].labels == ("ham", "spam")
    assert build_tools(policy())[1] is not tools[1]  # fresh instances each time


def test_every_policy_kind_has_a_factory_and_the_mapping_is_read_only() -> None:
    assert set(FACTORIES) == set(TOOL_KINDS)
    with pytest.raises(TypeError):
        FACTORIES["random"] = RandomVoter  # type: ignore[index]


def test_unknown_kind_is_a_tool_error_naming_it() -> None:
    spec = SimpleNamespace(kind="weather_api", name="wx", enabled=True)
    with pytest.raises(ToolError, match=r"tool 'wx': unknown tool kind 'weather_api' \(known kinds: image_"):
        build_tool(spec, ("ham", "spam"))
    with pytest.raises(ToolError, match="unknown tool kind"):
        build_tools(policy(), factories={"rules": Rules})  # a mapping without the classifier


def test_unusable_settings_fail_when_building() -> None:
    with pytest.raises(ToolError, match="minilm"):
        build_tools(policy(tools=[RetrievalSpec(name="knn", embedding="minilm")]))


def test_the_deployments_environment_reaches_the_tools_that_need_it() -> None:
    env = ToolEnvironment(open_meteo_archive_url="http://127.0.0.1:9/archive",
                          open_meteo_forecast_url="http://127.0.0.1:9/forecast",
                          image_limits=ImageLimits(max_pixels=100), tool_endpoints=("http://127.0.0.1:8/own",))
    tools = [WeatherSpec(name="wx"), WeatherSpec(name="wx2", archive_url="http://127.0.0.1:8/own"),
             ImageClassifierSpec(name="img")]
    wx, wx2, img = build_tools(policy(tools=tools), env=env)
    assert (wx.client.config.archive_url, wx.client.config.forecast_url) == (env.open_meteo_archive_url,
                                                                            env.open_meteo_forecast_url)
    assert wx2.client.config.archive_url == "http://127.0.0.1:8/own"  # the spec's own (allowed) endpoint wins
    assert img.limits.max_pixels == 100
    default_wx, default_img = build_tools(policy(tools=[WeatherSpec(name="wx"), ImageClassifierSpec(name="img")]))
    assert default_wx.client.config.archive_url == ToolEnvironment().open_meteo_archive_url
    assert default_img.limits == ImageLimits()


def test_an_image_over_the_deployments_limit_is_an_abstain_with_the_reason() -> None:
    buffer = io.BytesIO()
    Image.new("L", (20, 20), 128).save(buffer, format="PNG")
    (img,) = build_tools(policy(tools=[ImageClassifierSpec(name="img")]),
                         env=ToolEnvironment(image_limits=ImageLimits(max_pixels=100)))
    features, why = image_features(Batch([Item("a", image=buffer.getvalue())]), 8, 2, 4, img.limits)
    assert not features.any() and "20 x 20 pixels; the limit is 100 pixels" in why[0]
    _, ok = image_features(Batch([Item("a", image=buffer.getvalue())]), 8, 2, 4)  # the default limits
    assert ok == [""]
