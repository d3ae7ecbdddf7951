"""How the agent orders, skips and spares tools: the planner's part of a policy (``Policy.planner``)."""

from __future__ import annotations

from pydantic import Field

from policies.spec_base import _Strict


class PlannerSpec(_Strict):
    """How the agent orders and skips tools."""

    min_tool_weight: float = Field(
        default=0.05, ge=0.0, description="Tools whose learned weight stays below this are skipped."
    )
    explore_rate: float = Field(
        default=0.05, ge=0.0, le=1.0,
        description="Share of items on which every tool is called, to keep measuring tool value.",
    )
    cheap_cost: float = Field(
        default=1.0, ge=0.0,
        description="Tools costing at most this vote on every item; dearer tools are called only on items "
                    "they can still move over the threshold (the cascade).",
    )
    best_case_vote: float = Field(
        default=0.99, gt=0.5, lt=1.0,
        description="How sure an expensive tool's vote may be: its votes are held to it where they are pooled (the "
                    "top label at most this, none under the rest spread evenly), and it is called on items such a "
                    "vote could lift over the threshold, and on items above it that such a vote against could take "
                    "below it (the certificate is computed on every tool's vote).",
    )
    settle_confidence: float | None = Field(
        default=None, gt=0.5, le=1.0,
        description="An item whose cheap tools' pooled confidence reaches this is decided on their votes alone: "
                    "no dearer tool is asked, and its score is the cheap pool's in calibration too, so the "
                    "certificate covers the cascade as it decides. Fixed before any data; lower settles more "
                    "items without the dear tools (faster, at some cost in human reviews). Unset: off.",
    )

    def is_cheap(self, cost: float) -> bool:
        """A tool of this cost votes on every item (the one definition of cheap: the cascade spares the others)."""
        return cost <= self.cheap_cost
