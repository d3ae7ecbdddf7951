"""Build a policy's tools: one plain mapping from tool kind to a factory, no global registration."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from types import MappingProxyType
from typing import Any

from policies.exceptions import ToolError
from policies.model import LLMSpec, Policy
from tools.base import ExampleSource, ReadsExamples, Tool
from tools.environment import ToolEnvironment
from tools.image_classifier import ImageClassifier
from tools.image_embedding import ImageEmbedding
from tools.llm import LLMTool
from tools.random_voter import RandomVoter
from tools.remote import RemoteModelTool
from tools.retrieval import Retrieval
from tools.rules import Rules
from tools.text_classifier import TextClassifier
from tools.text_embedding import TextEmbedding
from tools.weather import WeatherTool

Factory = Callable[[Any, tuple[str, ...]], Tool]


KINDS: Mapping[str, type] = MappingProxyType({  # tool kind -> its class
    "text_classifier": TextClassifier,
    "image_classifier": ImageClassifier,
    "retrieval": Retrieval,
    "rules": Rules,
    "random": RandomVoter,
    "weather": WeatherTool,
    "llm": LLMTool,
    "remote_model": RemoteModelTool,
    "text_embedding": TextEmbedding,
    "image_embedding": ImageEmbedding,
})
# kinds that take the deployment's ``env``
DEPLOYED_KINDS = frozenset({"image_classifier", "image_embedding", "text_embedding", "weather", "llm",
                            "remote_model"})


def factories_for(env: ToolEnvironment) -> Mapping[str, Factory]:
    """Tool kind -> factory; the tools that talk to the deployment (endpoints, limits) get ``env``."""
    return MappingProxyType({kind: partial(cls, env=env) if kind in DEPLOYED_KINDS else cls
                             for kind, cls in KINDS.items()})


FACTORIES: Mapping[str, Factory] = factories_for(ToolEnvironment())


def build_tool(spec: Any, labels: Sequence[str], factories: Mapping[str, Factory] = FACTORIES) -> Tool:
    """One tool from its spec. Unknown kind -> :class:`ToolError` naming it."""
    kind = getattr(spec, "kind", None)
    factory = factories.get(kind) if isinstance(kind, str) else None
    if factory is None:
        known = ", ".join(sorted(factories))
        raise ToolError(f"tool {getattr(spec, 'name', '?')!r}: unknown tool kind {kind!r} (known kinds: {known})")
    return factory(spec, tuple(labels))


def build_tools(policy: Policy, factories: Mapping[str, Factory] | None = None, *,
                env: ToolEnvironment | None = None) -> list[Tool]:
    """The policy's enabled tools, in policy order, each a fresh instance (models start untrained).

    ``env``: the deployment's endpoints and limits (``service.settings.tool_environment``); the defaults
    otherwise. ``factories`` replaces the kind -> factory mapping (tests)."""
    if factories is None:
        factories = factories_for(env or ToolEnvironment())
    labels = tuple(policy.labels)
    specs = [spec for spec in policy.tools if spec.enabled]
    tools = [build_tool(spec, labels, factories) for spec in specs]
    by_name = {tool.name: tool for tool in tools}
    for spec, tool in zip(specs, tools, strict=True):  # an llm tool's few-shot examples come from a retrieval tool
        if isinstance(spec, LLMSpec) and spec.examples_from is not None and isinstance(tool, ReadsExamples):
            source = by_name.get(spec.examples_from)
            tool.retrieval = source if isinstance(source, ExampleSource) else None
    return tools
