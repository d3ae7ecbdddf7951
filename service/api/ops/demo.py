"""The demo's status and its reviewer switch, for ``/projects/{project}/demo`` (see service/offline/demo)."""

from __future__ import annotations

from policies import ConflictError
from service.api.schemas.demo import DemoStatus
from service.offline.demo.control import SIMULATED_REVIEWER, DemoControl
from service.store import SqlStore


def status(*, store: SqlStore, demo: DemoControl | None, project: str) -> DemoStatus:
    """``running`` False (and nothing else) unless this server runs the demo on ``project``."""
    store.projects.get_project(project)  # NotFoundError for an unknown project
    if demo is None or demo.project != project:
        return DemoStatus(running=False, project=project)
    snap = demo.snapshot()
    answers = store.learning.answers_by_reviewer(project)
    simulated = sum(n for name, n in answers.items() if name.startswith(SIMULATED_REVIEWER))
    return DemoStatus(running=True, project=project, dataset=snap.dataset, position=snap.position, total=snap.total,
                      rate_per_second=snap.rate_per_second, reviewer=snap.reviewer,
                      reviewer_paused=snap.reviewer_paused, review_delay_seconds=snap.review_delay_seconds,
                      simulated_answers=simulated, human_answers=sum(answers.values()) - simulated,
                      answers_by_reviewer=answers)


def set_reviewer_paused(*, store: SqlStore, demo: DemoControl | None, project: str, paused: bool,
                        actor: str) -> DemoStatus:
    """Pause or resume the simulated reviewer (409 when no demo runs on the project); an audit entry when it
    changes."""
    store.projects.get_project(project)
    if demo is None or demo.project != project:
        raise ConflictError(f"no demo runs on project {project!r}: start it with `labelagent demo`")
    if demo.snapshot().reviewer_paused != paused:
        demo.set_reviewer_paused(paused)
        store.audit.log_event(project, "demo.reviewer_paused" if paused else "demo.reviewer_resumed", actor=actor,
                        detail={"reviewer": demo.snapshot().reviewer})
    return status(store=store, demo=demo, project=project)
