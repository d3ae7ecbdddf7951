"""The base every policy model and tool spec derives from (its own module so spec modules can share it)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ToolSpecBase(_Strict):
    """Fields every tool has: a unique name within the policy, a kind and a cost per item."""

    name: str = Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
    cost: float = Field(default=1.0, ge=0.0, description="Declared cost per item, in budget units.")
    enabled: bool = True
