"""Projects: create one with its first policy, read them back."""

from __future__ import annotations

from pydantic import Field

from service.api.deps import PROJECT_PATTERN
from service.api.schemas.common import PolicyInput, Request
from service.store.tables import ProjectPublic


class ProjectCreateRequest(Request):
    name: str = Field(min_length=1, max_length=64, pattern=PROJECT_PATTERN,
                      description="Lowercase letters, digits, '_' and '-'; starts with a letter or digit.")
    policy: PolicyInput = Field(description="The first policy version: a JSON object, or its YAML text. "
                                            "`project` defaults to the name and `version` to 1.")


class ProjectDetail(ProjectPublic):
    labels: list[str] = Field(description="The active policy's label set.")
    policy_versions: int = Field(description="How many policy versions the project has.")
