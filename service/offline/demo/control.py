"""What the HTTP layer may ask of a running demo (``app.state.demo``): its status, and pausing its reviewer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

SIMULATED_REVIEWER = "simulated-reviewer"  # every simulated reviewer's name starts with it


@dataclass(frozen=True, slots=True)
class DemoSnapshot:
    project: str
    dataset: str
    position: int
    total: int
    rate_per_second: float
    reviewer: str
    reviewer_paused: bool
    review_delay_seconds: float


class DemoControl(Protocol):
    """A demo simulation running beside the API in this process."""

    @property
    def project(self) -> str: ...

    def snapshot(self) -> DemoSnapshot:
        """Where the stream is, and whether the simulated reviewer answers."""
        ...

    def set_reviewer_paused(self, paused: bool) -> None:
        """Stop (True) or resume (False) the simulated reviewer's claims."""
        ...
