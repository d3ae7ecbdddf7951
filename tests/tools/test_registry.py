"""build_tools: enabled tools in policy order from a plain kind -> factory mapping."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from policies.exceptions import ToolError
from policies.model import TOOL_KINDS, Policy, RandomSpec, RetrievalSpec, Rule, RulesSpec, TextClassifierSpec
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
