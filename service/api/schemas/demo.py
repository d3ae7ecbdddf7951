"""``/projects/{project}/demo``: what the demo's simulation is doing (``labelagent demo``), and pausing its reviewer."""

from __future__ import annotations

from pydantic import BaseModel, Field

from service.api.schemas.common import Request


class DemoStatus(BaseModel):
    running: bool = Field(description="True when this server runs `labelagent demo` on this project.")
    project: str
    dataset: str | None = Field(default=None, description="The streamed dataset, with its license.")
    position: int = Field(default=0, description="Rows of the dataset streamed so far (kept in the database: the "
                                                 "project's items).")
    total: int = Field(default=0, description="Rows in the dataset.")
    rate_per_second: float = Field(default=0.0, description="Items the stream sends per second.")
    reviewer: str | None = Field(default=None, description="Name (prefix) of the simulated reviewers.")
    reviewer_paused: bool = Field(default=False, description="True while the simulated reviewers do not claim.")
    review_delay_seconds: float = Field(default=0.0, description="How long a simulated reviewer holds a task "
                                                                  "before answering it from the dataset's label.")
    simulated_answers: int = Field(default=0, description="Answers given by the simulated reviewers (all runs).")
    human_answers: int = Field(default=0, description="Answers given by anyone else: people (all runs).")
    answers_by_reviewer: dict[str, int] = Field(default_factory=dict, description="Answers per reviewer name in the "
                                                "project (all runs): who gave the ground truth.")


class DemoReviewerRequest(Request):
    paused: bool = Field(description="True: the simulated reviewers stop claiming (tasks in hand go back to the "
                                     "queue); false: they answer again.")
