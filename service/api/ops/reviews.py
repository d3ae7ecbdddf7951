"""The review queue as reviewers and operators see it. Audits hide the agent's view from the reviewer."""

from __future__ import annotations

from agent.ports import CALIBRATION_KINDS
from policies import Policy
from service.api.ops import tell
from service.api.ops.images import thumbnail_url
from service.api.schemas.items import VoteOut
from service.api.schemas.reviews import (
    ClaimedTask,
    HeartbeatResponse,
    QueueEntry,
    QueuePage,
    ReleaseResponse,
    ReviewItem,
    SkipResponse,
    SubmitResponse,
)
from service.runtime.feedback import FeedbackSink
from service.store import ReviewAnswer, SqlStore


def claim_next(*, store: SqlStore, project: str, reviewer: str) -> ClaimedTask | None:
    """The next task by priority, leased to ``reviewer`` for the active policy's ``lease_seconds``; None when the
    queue holds nothing this reviewer may take. One transaction (the claim, its item, its votes)."""
    view = store.reviews.claim_review_view(project, reviewer=reviewer)
    if view is None:
        return None
    task = view.task
    audit = task.kind in CALIBRATION_KINDS  # i14: the calibration set's answers are given blind
    evidence = None if audit or view.votes is None else [
        VoteOut(tool=v.tool, distribution=v.distribution, cost=v.cost, evidence=v.evidence, model_version=None)
        for v in view.votes]
    return ClaimedTask(
        task_id=task.task_id, lease_token=task.token, lease_expires_at=task.lease_expires_at,
        kind=task.kind,  # type: ignore[arg-type]
        priority=task.priority, policy_version=task.policy_version, answers_needed=task.answers_needed,
        answers=task.answers, labels=view.labels,
        item=ReviewItem(external_id=task.item.key, text=task.item.text, metadata=task.item.metadata,
                        thumbnail_url=thumbnail_url(project, task.item.key) if task.has_image else None),
        suggestion=None if audit else task.suggestion,
        confidence=None if audit else task.confidence,
        evidence=evidence,
    )


def _task_policy(store: SqlStore, task_id: int) -> tuple[str, Policy]:
    ref = store.reviews.task_ref(task_id)  # NotFoundError for an unknown task
    return ref.project, store.projects.get_policy(ref.project, ref.policy_version)


Scope = frozenset[str] | None  # the projects the caller's key may see (None: every project)


def heartbeat(*, store: SqlStore, task_id: int, token: str, scope: Scope = None) -> HeartbeatResponse:
    _, policy = _task_policy(store, task_id)
    expires = store.reviews.extend_review_lease(task_id, token, lease_seconds=policy.lease_seconds, projects=scope)
    return HeartbeatResponse(task_id=task_id, lease_expires_at=expires)


def submit(*, store: SqlStore, feedback: FeedbackSink, task_id: int, token: str, label: str, scope: Scope = None
           ) -> SubmitResponse:
    """Store the answer (ground truth), then tell the feedback sink; learning happens elsewhere, never here."""
    ref = store.reviews.task_key(task_id)  # remembered from the claim: no query
    result = store.reviews.submit_reviews([ReviewAnswer(task_id, token, label)], project=ref.project, projects=scope)
    tell(feedback, ref.project)
    final = result.settled[0].label if result.settled else None
    return SubmitResponse(task_id=task_id, external_id=ref.external_id, label=label, settled=bool(result.settled),
                          final_label=final)


def skip(*, store: SqlStore, task_id: int, token: str, seconds: int, scope: Scope = None) -> SkipResponse:
    _, until = store.reviews.skip_review(task_id, token, seconds=seconds, projects=scope)
    return SkipResponse(task_id=task_id, skipped_until=until)


def release(*, store: SqlStore, task_id: int, token: str, scope: Scope = None) -> ReleaseResponse:
    store.reviews.release_review(task_id, token, projects=scope)
    return ReleaseResponse(task_id=task_id)


def list_queue(*, store: SqlStore, project: str, status: str | None, kind: str | None, offset: int, limit: int
               ) -> QueuePage:
    rows, total = store.reviews.list_reviews(project, status=status, kind=kind, offset=offset, limit=limit)
    return QueuePage(tasks=[QueueEntry.model_validate(r) for r in rows], total=total, offset=offset, limit=limit)
