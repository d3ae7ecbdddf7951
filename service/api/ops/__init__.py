"""What the routes do, as keyword-only functions over the store (``service.api.routes`` stays thin)."""

from __future__ import annotations

import logging

from service.runtime.feedback import FeedbackSink

log = logging.getLogger("labelagent.api")


def tell(feedback: FeedbackSink, project: str) -> None:
    """Wake the worker runtime about news in ``project`` (new items, answers, an active policy). The change is
    committed already: a failing sink is logged and only delays the work until the workers' next poll."""
    try:
        feedback.notify(project)
    except Exception:  # the sink's contract says it never raises; a broken one must not fail a committed request
        log.exception("feedback sink failed for project %r", project)
