"""The review queue's statements on the answer side, prebuilt once per backend (ids bound as one list: an array on
PostgreSQL, see :func:`service.store.base.one_of`)."""

from __future__ import annotations

from functools import cache
from typing import Any

from sqlalchemy import Select, bindparam, select, update

from service.store.base import image_t, item_t, one_of, task_t, with_image

TASK_COLS = (task_t.c.id, task_t.c.item_id, task_t.c.kind, task_t.c.priority, task_t.c.suggestion,
             task_t.c.confidence, task_t.c.policy_version, task_t.c.answers_needed, task_t.c.answers)


@cache
def release_query(one_more: bool, sqlite: bool) -> Any:
    """Answered tasks ``r_ids`` leave their reviewer's claim with status ``r_status`` (asking for one more answer
    when ``one_more``); built once per variant."""
    extra = {"answers_needed": task_t.c.answers_needed + 1} if one_more else {}
    return (update(task_t).where(one_of(task_t.c.id, "r_ids", sqlite=sqlite))
            .values(status=bindparam("r_status"), reviewer=None, lease_token=None, lease_expires_at=None,
                    updated_at=bindparam("r_now"), answers=task_t.c.answers + 1, **extra))


@cache
def items_labeled(sqlite: bool) -> Any:
    """The items ``l_ids`` become labeled at ``l_now``; built once per backend."""
    return (update(item_t).where(one_of(item_t.c.id, "l_ids", sqlite=sqlite))
            .values(status="labeled", updated_at=bindparam("l_now")))


@cache
def locked_tasks_query(by_project: bool, sqlite: bool) -> Select[Any]:
    """The tasks ``t_ids`` (of project ``t_pid`` when ``by_project``) with their items, locked for update on
    PostgreSQL; built once per variant (parameters ``t_ids``, ``t_pid``)."""
    cols = (*TASK_COLS, task_t.c.project_id, task_t.c.status, task_t.c.lease_token, task_t.c.reviewer,
            item_t.c.external_id, item_t.c.text, item_t.c.meta, image_t.c.data.label("image"), item_t.c.seq)
    query = (with_image(select(*cols).join(item_t, item_t.c.id == task_t.c.item_id))
             .where(one_of(task_t.c.id, "t_ids", sqlite=sqlite)))
    if by_project:
        query = query.where(task_t.c.project_id == bindparam("t_pid"))
    return query if sqlite else query.with_for_update(of=task_t)
