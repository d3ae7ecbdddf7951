"""Projects: create one with its first policy, read them back."""

from __future__ import annotations

from pydantic import Field

from service.deps import PROJECT_PATTERN
from service.models import ProjectPublic
from service.schemas.common import PolicyInput, Request


class ProjectCreateRequest(Request):
    name: str = Field(min_length=1, max_length=64, pattern=PROJECT_PATTERN,
                      description="Lowercase letters, digits, '_' and '-'; starts with a letter or digit.")
    policy: PolicyInput = Field(description="The first policy version: a JSON object, or its YAML text. "
                                            "`project` defaults to the name and `version` to 1.")


class ProjectDetail(ProjectPublic):
    labels: list[str] = Field(description="The active policy's label set.")
    policy_versions: int = Field(description="How many policy versions the project has.")
