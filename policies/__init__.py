"""Versioned labeling policies: models, validation and YAML on disk. Depends on nothing of ours."""

from policies.exceptions import (
    AgentError,
    ConflictError,
    InputError,
    LabelAgentError,
    NotFoundError,
    PolicyError,
    ToolError,
)
from policies.io import dumps_policy, example_policy, load_policy, loads_policy, parse_policy, save_policy
from policies.model import (
    TOOL_KINDS,
    PlannerSpec,
    Policy,
    RandomSpec,
    RetrievalSpec,
    Rule,
    RulesSpec,
    TextClassifierSpec,
    ToolSpec,
    ToolSpecBase,
)

__all__ = [
    "TOOL_KINDS",
    "AgentError",
    "ConflictError",
    "InputError",
    "LabelAgentError",
    "NotFoundError",
    "PlannerSpec",
    "Policy",
    "PolicyError",
    "RandomSpec",
    "RetrievalSpec",
    "Rule",
    "RulesSpec",
    "TextClassifierSpec",
    "ToolError",
    "ToolSpec",
    "ToolSpecBase",
    "dumps_policy",
    "example_policy",
    "load_policy",
    "loads_policy",
    "parse_policy",
    "save_policy",
]
