"""The review queue: claim tasks under a lease, submit answers (ground truth), settle items."""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import BindParameter, Connection, Row, Select, Table, bindparam, exists, func, select, union_all, update

from agent.ports import CALIBRATION_KINDS, WAITING_REASON, GroundTruth
from policies import ConflictError, InputError, NotFoundError, Policy
from service.store.base import (
    StoreBase,
    as_utc,
    calib_t,
    chunks,
    image_t,
    item_t,
    label_t,
    lease_until,
    new_token,
    project_t,
    review_t,
    task_t,
    to_item,
    vote_t,
    with_image,
)
from service.store.batches import LABEL_COLS
from service.store.bulk import bulk_insert, db_value
from service.store.db import read_tx, write_tx
from service.store.review_sql import TASK_COLS, items_labeled, locked_tasks_query, release_query
from service.store.tables import TASK_STATUSES
from service.store.types import ClaimedReview, ReviewAnswer, ReviewView, SubmitResult, TaskKey
from tools.base import Vote

TASK_KEYS_KEPT = 100_000
REVIEW_COLS = ("project_id", "task_id", "item_id", "reviewer", "label", "created_at")
CALIB_COLS = ("project_id", "item_id", "policy_version", "item_key", "confidence", "predicted", "truth", "kind", "seq",
              "created_at")
_VOTES = (select(vote_t.c.tool, vote_t.c.distribution, vote_t.c.cost, vote_t.c.evidence)  # a claimed task's votes
          .where(vote_t.c.item_id == bindparam("v_item"), vote_t.c.policy_version == bindparam("v_version"))
          .order_by(vote_t.c.id))


class ReviewsMixin(StoreBase):
    _task_keys: dict[int, TaskKey]  # set on the first remembered task (read with getattr until then)
    def claim_review(self, project: str, *, reviewer: str, lease_seconds: float | None = None,
                     now: datetime | None = None) -> ClaimedReview | None:
        """The next task for ``reviewer`` (highest priority, then oldest), or None when the queue is empty."""
        tasks = self.claim_reviews(project, reviewer=reviewer, limit=1, lease_seconds=lease_seconds, now=now)
        return tasks[0] if tasks else None

    def claim_reviews(self, project: str, *, reviewer: str, limit: int, lease_seconds: float | None = None,
                      now: datetime | None = None) -> list[ClaimedReview]:
        """Lease up to ``limit`` tasks to ``reviewer`` under one token: open tasks, or claimed ones whose lease
        expired, that this reviewer has not answered yet (overlap needs distinct reviewers)."""
        now = as_utc(now)
        expires = lease_until(now, lease_seconds if lease_seconds is not None else self.settings.review_lease_seconds)
        with write_tx(self.engine) as conn:
            return self._claim_tasks(conn, self._project_id(conn, project), reviewer, limit, expires, now)

    def claim_review_view(self, project: str, *, reviewer: str, now: datetime | None = None) -> ReviewView | None:
        """What the claim route answers, in one transaction (one connection, one commit): the next task leased for
        the active policy's ``lease_seconds``, the labels of the task's policy version, and the votes recorded at
        decision time (None for an audit: the reviewer must not see the agent's view). None when the queue holds
        nothing this reviewer may take."""
        now = as_utc(now)
        with write_tx(self.engine) as conn:
            pid = self._project_id(conn, project)
            active = self._policy(conn, pid, self._active_version(conn, pid))
            claimed = self._claim_tasks(conn, pid, reviewer, 1, lease_until(now, active.lease_seconds), now)
            if not claimed:
                return None
            task = claimed[0]
            policy = active if task.policy_version == active.version else self._policy(conn, pid,
                                                                                        task.policy_version)
            votes = None
            if task.kind not in CALIBRATION_KINDS:
                rows: Iterable[Row[str, dict[str, float] | None, float, str]] = conn.execute(
                    _VOTES, {"v_item": task.item_id, "v_version": task.policy_version})
                votes = [Vote(tool=tool, distribution=dist, cost=cost, evidence=evidence)
                         for tool, dist, cost, evidence in rows]
        self._remember_task(task.task_id, project, task.policy_version, task.item.key)
        return ReviewView(task=task, labels=list(policy.labels), votes=votes)

    def task_key(self, task_id: int) -> TaskKey:
        """The task's project, policy version and item: what never changes on a task, so it is remembered (from
        the claim, or the first lookup) and the submit route and its access check need no query."""
        cache: dict[int, TaskKey] | None = getattr(self, "_task_keys", None)
        key = cache.get(task_id) if cache is not None else None
        if key is None:
            ref = self.task_ref(task_id)  # type: ignore[attr-defined]  # QueueAdminMixin; NotFoundError if unknown
            key = self._remember_task(ref.task_id, ref.project, ref.policy_version, ref.external_id)
        return key

    def known_task_key(self, task_id: int) -> TaskKey | None:
        """The remembered :meth:`task_key` of ``task_id``, None when it is not remembered (never a query: callable
        from the event loop)."""
        cache: dict[int, TaskKey] | None = getattr(self, "_task_keys", None)
        return cache.get(task_id) if cache is not None else None

    def _remember_task(self, task_id: int, project: str, policy_version: int, external_id: str) -> TaskKey:
        cache: dict[int, TaskKey] | None = getattr(self, "_task_keys", None)
        if cache is None or len(cache) >= TASK_KEYS_KEPT:
            cache = self._task_keys = {}  # bounded: start over when full
        key = cache[task_id] = TaskKey(task_id, project, policy_version, external_id)
        return key

    def _claim_tasks(self, conn: Connection, pid: int, reviewer: str, limit: int, expires: datetime, now: datetime
                     ) -> list[ClaimedReview]:
        token = new_token()
        sql = self._claim_sql()
        params = {"c_pid": pid, "c_reviewer": reviewer, "c_now": now, "c_limit": limit, "c_token": token,
                  "c_expires": expires}
        if sql.pick is not None:  # SQLite (only there is it set): RETURNING may not name another table there
            ids: list[int] = list(conn.execute(sql.pick, params).scalars())
            if not ids:
                return []
            rows = conn.execute(sql.claim, {**params, "c_ids": ids}).all()
            items = _items_by_id(conn, [r.item_id for r in rows])
        else:  # one statement, one round trip: pick and lock the tasks, lease them, return them with their item
            rows = conn.execute(sql.claim, params).all()
            items = {r.item_id: (to_item(r.external_id, r.text, r.meta, None), bool(r.has_image)) for r in rows}
        rows = sorted(rows, key=lambda r: (-r.priority, r.id))
        return [ClaimedReview(task_id=r.id, token=token, item=items[r.item_id][0], kind=r.kind,
                              priority=float(r.priority), suggestion=r.suggestion, confidence=r.confidence,
                              policy_version=r.policy_version, reviewer=reviewer, answers_needed=r.answers_needed,
                              answers=r.answers, lease_expires_at=expires, item_id=r.item_id,
                              has_image=items[r.item_id][1]) for r in rows]

    def _claim_sql(self) -> _ClaimSql:
        """The claim's statements, built once per store (``StoreBase._statement``) with bound parameters (``c_pid``,
        ``c_reviewer``, ``c_now``, ``c_limit``, ``c_token``, ``c_expires``; ``c_ids`` for SQLite's second step):
        building the PostgreSQL one and computing its cache key took a fifth of a claim request's CPU."""

        def build() -> _ClaimSql:
            params: list[BindParameter[Any]] = [bindparam(f"c_{n}") for n in ("pid", "reviewer", "now", "limit")]
            pid, reviewer, now, limit = params
            not_mine = self._claimable_by(reviewer, now)
            open_ = (task_t.c.project_id == pid) & (task_t.c.status == "open") & not_mine
            expired = ((task_t.c.project_id == pid) & (task_t.c.status == "claimed")
                       & (task_t.c.lease_expires_at <= now) & not_mine)
            claim = update(task_t).values(status="claimed", reviewer=reviewer, lease_token=bindparam("c_token"),
                                          lease_expires_at=bindparam("c_expires"), updated_at=now)
            if self.sqlite:
                both = union_all(select(_best(expired, limit).subquery()),
                                 select(_best(open_, limit).subquery())).subquery()
                return _ClaimSql(
                    pick=select(both.c.id).order_by(both.c.priority.desc(), both.c.id).limit(limit),
                    claim=claim.where(task_t.c.id.in_(bindparam("c_ids", expanding=True)), open_ | expired)
                    .returning(*TASK_COLS))
            has_image = exists().where(image_t.c.item_id == item_t.c.id).label("has_image")
            return _ClaimSql(pick=None, claim=claim.where(
                task_t.c.id.in_(_pick_locked(expired, open_, limit)), open_ | expired,
                item_t.c.id == task_t.c.item_id).returning(
                *TASK_COLS, item_t.c.external_id, item_t.c.text, item_t.c.meta, has_image))

        return self._statement("review_claim", build)

    def _claimable_by(self, reviewer: Any, now: Any) -> Any:
        """Condition on ``task_t``: tasks ``reviewer`` (a bound parameter, as ``now``) may claim: not answered by them
        (overlap needs distinct reviewers), nor waiting for the agent (``WAITING_REASON``). Other mixins narrow it."""
        return (~exists().where(review_t.c.task_id == task_t.c.id, review_t.c.reviewer == reviewer)
                & task_t.c.reason.is_distinct_from(WAITING_REASON))

    def extend_review_lease(self, task_id: int, token: str, *, lease_seconds: float | None = None,
                            projects: frozenset[str] | None = None, now: datetime | None = None) -> datetime:
        """Heartbeat for a claimed task; ConflictError when the token no longer holds it, NotFoundError when the
        task is not in ``projects`` (the caller's scope; None: any)."""
        now = as_utc(now)
        expires = lease_until(now, lease_seconds if lease_seconds is not None else self.settings.review_lease_seconds)
        with write_tx(self.engine) as conn:
            if projects is not None:
                name = conn.execute(select(project_t.c.name).join(task_t, task_t.c.project_id == project_t.c.id)
                                    .where(task_t.c.id == task_id)).scalar()
                if name not in projects:
                    raise NotFoundError(f"review task {task_id} does not exist")
            n = conn.execute(update(task_t).where(task_t.c.id == task_id, task_t.c.status == "claimed",
                                                  task_t.c.lease_token == token)
                             .values(lease_expires_at=expires, updated_at=now)).rowcount
        if n != 1:
            raise ConflictError(f"review task {task_id}: the lease token is stale or not yours; claim again")
        return expires

    def submit_review(self, task_id: int, token: str, label: str, *, project: str | None = None,
                      projects: frozenset[str] | None = None, now: datetime | None = None) -> GroundTruth:
        """One reviewer's answer (see :meth:`submit_reviews`); returns it as ground truth."""
        return self.submit_reviews([ReviewAnswer(task_id, token, label)], project=project, projects=projects,
                                   now=now).answers[0]

    def submit_reviews(self, answers: Sequence[ReviewAnswer], *, project: str | None = None,
                       projects: frozenset[str] | None = None, now: datetime | None = None) -> SubmitResult:
        """Store many answers in one transaction, all or nothing. Only tasks of ``project`` (when given) and of
        ``projects`` (the caller's scope; None: any) are found; any other is a NotFoundError.

        Each answer needs the token of a current claim on its task (ConflictError otherwise: stale, foreign or
        already answered; a claim whose lease expired still counts until someone else claims the task) and a
        label from the task's policy (InputError). A task is done when ``answers_needed`` distinct reviewers
        answered; if they disagree and the policy's ``max_overlap`` allows, one more answer is asked for.
        When done, the item gets a human label (majority; ``confidence`` = agreement) and a calibration record.
        """
        now = as_utc(now)
        ids = [a.task_id for a in answers]
        if len(set(ids)) != len(ids):
            raise InputError("a task is answered twice in one call; send one answer per task")
        out = SubmitResult()
        if not answers:
            return out
        with write_tx(self.engine) as conn:
            tasks = self._locked_tasks(conn, ids, project)
            if projects is not None:
                names = self._project_names(conn, {t["project_id"] for t in tasks.values()})
                tasks = {i: t for i, t in tasks.items() if names.get(t["project_id"]) in projects}
            ts = db_value(conn, review_t.c.created_at, now)
            reviews: list[tuple[Any, ...]] = []
            policies: dict[tuple[int, int], Policy] = {}
            for a in answers:
                t = tasks.get(a.task_id)
                if t is None:
                    raise NotFoundError(f"review task {a.task_id} does not exist")
                if t["status"] != "claimed" or t["lease_token"] != a.token:
                    raise ConflictError(f"review task {a.task_id}: the lease token is stale or not yours; claim again")
                policy = policies.get(t["pv"]) or self._policy(conn, t["project_id"], t["policy_version"])
                policies[t["pv"]] = policy
                if a.label not in policy.labels:
                    raise InputError(f"review task {a.task_id}: label {a.label!r} is not one of {policy.labels}")
                reviews.append((t["project_id"], a.task_id, t["item_id"], t["reviewer"], a.label, ts))
                out.answers.append(GroundTruth(item=t["item"], label=a.label, reviewer=t["reviewer"]))
            _insert(conn, review_t, REVIEW_COLS, reviews)
            answered = [tasks[a.task_id] for a in answers]
            multi = [t["id"] for t in answered if t["answers_needed"] > 1 and t["answers"] + 1 >= t["answers_needed"]]
            history = _labels_by_task(conn, multi)
            done, wait, more, labels, calib, item_ids = _settle(answers, answered, history, policies, ts, out)
            for status, group, one_more in (("done", done, False), ("open", wait, False), ("open", more, True)):
                for part in chunks(group):
                    conn.execute(release_query(one_more, self.sqlite),
                                 {"r_ids": part, "r_status": status, "r_now": now})
            _insert(conn, label_t, LABEL_COLS, labels)
            _insert(conn, calib_t, CALIB_COLS, calib)
            for part in chunks(item_ids):
                conn.execute(items_labeled(self.sqlite), {"l_ids": part, "l_now": now})
        return out

    def _project_names(self, conn: Connection, ids: set[int]) -> dict[int, str]:
        if not ids:
            return {}
        rows: Iterable[Row[int, str]] = conn.execute(
            select(project_t.c.id, project_t.c.name).where(project_t.c.id.in_(sorted(ids))))
        return {pid: name for pid, name in rows}

    def _locked_tasks(self, conn: Connection, ids: list[int], project: str | None) -> dict[int, dict[str, Any]]:
        pid = self._project_id(conn, project) if project is not None else None
        query = locked_tasks_query(pid is not None, self.sqlite)
        out: dict[int, dict[str, Any]] = {}
        for part in chunks(ids):
            for r in conn.execute(query, {"t_ids": part, "t_pid": pid}).mappings():
                t = dict(r)
                t["item"] = to_item(t.pop("external_id"), t.pop("text"), t.pop("meta"), t.pop("image"))
                t["pv"] = (t["project_id"], t["policy_version"])
                out[t["id"]] = t
        return out

    def count_tasks(self, project: str) -> dict[str, int]:
        with read_tx(self.engine) as conn:
            pid = self._project_id(conn, project)
            rows: Sequence[Row[str, int]] = conn.execute(_TASK_COUNTS, {"n_pid": pid}).all()
        counts = dict.fromkeys(TASK_STATUSES, 0)
        counts.update({status: n for status, n in rows})
        return counts


SMALL_INSERT = 16  # rows: up to this many go in one INSERT (one round trip); COPY costs two but scales better


def _insert(conn: Connection, table: Table, cols: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    """``bulk_insert`` for the few rows of an API call: on PostgreSQL one multi-row ``INSERT`` (one round trip)
    instead of ``COPY`` (two). Same driver-ready rows, same ``IntegrityError``."""
    if conn.dialect.name != "postgresql" or len(rows) > SMALL_INSERT:
        bulk_insert(conn, table, cols, rows)
        return
    if not rows:
        return
    quote = conn.dialect.identifier_preparer.quote
    one = f"({', '.join(['%s'] * len(cols))})"
    sql = (f"INSERT INTO {quote(table.name)} ({', '.join(quote(c) for c in cols)}) "
           f"VALUES {', '.join([one] * len(rows))}")
    conn.exec_driver_sql(sql, tuple(v for row in rows for v in row))


_TASK_COUNTS = (select(task_t.c.status, func.count()).where(task_t.c.project_id == bindparam("n_pid"))
                .group_by(task_t.c.status))
_ITEMS_BY_ID = (with_image(select(item_t.c.id, item_t.c.external_id, item_t.c.text, item_t.c.meta,
                                  image_t.c.item_id.is_not(None)))
                .where(item_t.c.id.in_(bindparam("i_ids", expanding=True))))


@dataclass(frozen=True)
class _ClaimSql:
    pick: Select[Any] | None  # SQLite: the ids to claim (PostgreSQL picks them inside the claim)
    claim: Any  # UPDATE ... RETURNING


def _best(cond: Any, limit: Any) -> Select[Any]:
    """The ``limit`` best tasks meeting ``cond``: highest priority, then oldest (the order of ix_review_task_claim)."""
    return (select(task_t.c.id, task_t.c.priority).where(cond)
            .order_by(task_t.c.priority.desc(), task_t.c.id).limit(limit))


def _pick_locked(expired: Any, open_: Any, limit: Any) -> Select[Any]:
    """PostgreSQL: the ids of the ``limit`` best claimable tasks, locked (``FOR UPDATE SKIP LOCKED``: concurrent
    claims pass each other's rows by). Expired leases and open tasks are picked apart, each along the claim index,
    then merged; as CTEs of the claim's UPDATE, so that the whole claim is one statement."""
    expired_, open_tasks = (_best(cond, limit).with_for_update(of=task_t, skip_locked=True).cte(name)
                            for cond, name in ((expired, "expired_tasks"), (open_, "open_tasks")))
    both = union_all(select(expired_.c.id, expired_.c.priority),
                     select(open_tasks.c.id, open_tasks.c.priority)).subquery("claimable")
    return select(both.c.id).order_by(both.c.priority.desc(), both.c.id).limit(limit)


def _items_by_id(conn: Connection, ids: list[int]) -> dict[int, tuple[Any, bool]]:
    """(item without its image bytes, whether it has an image) by item id: reviewers get a thumbnail URL."""
    out = {}
    for part in chunks(ids):
        for r in conn.execute(_ITEMS_BY_ID, {"i_ids": list(part)}):
            out[r[0]] = (to_item(r[1], r[2], r[3], None), bool(r[4]))
    return out


def _labels_by_task(conn: Connection, task_ids: list[int]) -> dict[int, list[tuple[str, str]]]:
    """(label, reviewer) per task, in answer order (includes the answers inserted in this transaction)."""
    out: dict[int, list[tuple[str, str]]] = defaultdict(list)
    for part in chunks(task_ids):
        query = (select(review_t.c.task_id, review_t.c.label, review_t.c.reviewer)
                 .where(review_t.c.task_id.in_(part)).order_by(review_t.c.id))
        rows: Iterable[Row[int, str, str]] = conn.execute(query)
        for task_id, label, reviewer in rows:
            out[task_id].append((label, reviewer))
    return out


def _settle(answers: Sequence[ReviewAnswer], answered: list[Any], history: dict[int, list[tuple[str, str]]],
            policies: dict[tuple[int, int], Policy], ts: Any, out: SubmitResult
            ) -> tuple[list[int], list[int], list[int], list[tuple[Any, ...]], list[tuple[Any, ...]], list[int]]:
    """What :meth:`ReviewsMixin.submit_reviews` does with each answered task: (tasks done, tasks waiting for
    more answers, tasks given one more answer because reviewers disagree, label rows, calibration rows, the
    items labeled); a settled task's answer goes to ``out.settled``."""
    done, wait, more = [], [], []
    labels: list[tuple[Any, ...]] = []
    calib: list[tuple[Any, ...]] = []
    item_ids: list[int] = []
    for a, t in zip(answers, answered, strict=True):
        if t["answers"] + 1 < t["answers_needed"]:
            wait.append(t["id"])
            continue
        votes = history.get(t["id"]) or [(a.label, t["reviewer"])]
        counts = Counter(lab for lab, _ in votes)
        top = max(counts.values())
        if top < len(votes) and t["answers_needed"] < policies[t["pv"]].max_overlap:
            more.append(t["id"])
            continue
        final = next(lab for lab, _ in votes if counts[lab] == top)  # ties: the earliest answer wins
        done.append(t["id"])
        labels.append((t["project_id"], t["item_id"], t["policy_version"], final, top / len(votes), "human",
                       None, 0.0, f"review task {t['id']}", ts))
        calib.append((t["project_id"], t["item_id"], t["policy_version"], t["item"].key, t["confidence"],
                      t["suggestion"], final, t["kind"], t["seq"], ts))
        item_ids.append(t["item_id"])
        out.settled.append(GroundTruth(item=t["item"], label=final, reviewer=",".join(r for _, r in votes)))
    return done, wait, more, labels, calib, item_ids
