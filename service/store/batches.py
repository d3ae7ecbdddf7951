"""Writing one graph run's output: votes, agent labels, review tasks and item states, in one transaction."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Row, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError

from agent.ports import BatchResult
from policies import ConflictError, InputError, Policy
from service.store.base import StoreBase, as_utc, audit_t, chunks, item_t, label_t, one_of, task_t, vote_t
from service.store.bulk import bulk_insert, db_value, json_text
from service.store.db import write_tx
from service.store.types import RecordResult

_DEFAULT_KIND = {"escalate": "escalation", "audit": "audit"}
VOTE_COLS = ("project_id", "item_id", "policy_version", "tool", "distribution", "cost", "evidence", "model_version")
LABEL_COLS = ("project_id", "item_id", "policy_version", "label", "confidence", "source", "threshold", "cost",
              "reason", "created_at")
AGENT_LABEL_COLS = (*LABEL_COLS, "snapshot_id")  # i14: an agent label names the snapshot that decided it
TASK_COLS = ("project_id", "item_id", "policy_version", "kind", "priority", "suggestion", "confidence", "reason",
             "status", "answers_needed", "answers", "created_at", "updated_at", "snapshot_id")


def parse_policy_key(project: str, policy_key: str) -> int:
    """``"project/3"`` -> 3, checking the project part."""
    name, _, version = policy_key.rpartition("/")
    if name != project or not (version.isascii() and version.isdigit()):
        raise InputError(f"policy_key {policy_key!r} does not name a version of project {project!r} "
                         f"(expected '{project}/<version>')")
    return int(version)


class BatchesMixin(StoreBase):
    def record_batch(self, project: str, result: BatchResult, lease_token: str | None = None, *,
                     now: datetime | None = None, actor: str = "worker") -> RecordResult:
        """Store a batch's decisions atomically. Fencing: with ``lease_token`` only items still leased under
        that token, with an unexpired lease, are written; without one, only items that nobody holds (pending,
        or leased with an expired lease). Other items are skipped and returned in ``fenced``. A second label
        for an item under the same policy version is refused by the database (ConflictError, nothing written).
        Each tool whose call failed in the run (``result.tool_failures``) gets a ``tool.failed`` audit entry by
        ``actor``, in the same transaction.
        """
        now = as_utc(now)
        version = parse_policy_key(project, result.policy_key)
        decisions = result.decisions
        keys = [d.key for d in decisions]
        if len(set(keys)) != len(keys):
            raise InputError("the batch result lists an item twice; one decision per item")
        with write_tx(self.engine) as conn:
            pid = self._project_id(conn, project)
            policy = self._policy(conn, pid, version)
            _check_decisions(result, policy)
            writable = self._writable_items(conn, pid, keys, lease_token, now)
            ts = db_value(conn, label_t.c.created_at, now)
            threshold, overlap, model_versions = result.threshold, policy.overlap, result.model_versions
            votes: list[tuple[Any, ...]] = []
            labels: list[tuple[Any, ...]] = []
            tasks: list[tuple[Any, ...]] = []
            labeled_ids: list[int] = []
            review_ids: list[int] = []
            fenced: list[str] = []
            for d in decisions:
                item_id = writable.get(d.key)
                if item_id is None:
                    fenced.append(d.key)
                    continue
                for v in d.votes:
                    votes.append((pid, item_id, version, v.tool, json_text(v.distribution), v.cost, v.evidence,
                                  model_versions.get(v.tool)))
                if d.action == "accept":
                    labels.append((pid, item_id, version, d.label, d.confidence, "agent", threshold, d.cost, d.reason,
                                   ts, result.snapshot_id))
                    labeled_ids.append(item_id)
                else:
                    tasks.append((pid, item_id, version, d.review_kind or _DEFAULT_KIND[d.action], d.priority,
                                  d.label, d.confidence, d.reason, "open", overlap, 0, ts, ts, result.snapshot_id))
                    review_ids.append(item_id)
            try:
                bulk_insert(conn, vote_t, VOTE_COLS, votes)
                bulk_insert(conn, label_t, AGENT_LABEL_COLS, labels)
                bulk_insert(conn, task_t, TASK_COLS, tasks)
            except IntegrityError as exc:
                raise ConflictError(f"an item of this batch already has a label or review task under "
                                    f"{result.policy_key}; nothing was written ({exc.orig})") from None
            settle = self._statement("record_settle", lambda: update(item_t).where(
                one_of(item_t.c.id, "ids", sqlite=self.sqlite)).values(
                status=bindparam("new_status"), lease_owner=None, lease_token=None, lease_expires_at=None,
                updated_at=bindparam("now")))
            for status, ids in (("labeled", labeled_ids), ("in_review", review_ids)):
                for part in chunks(ids):
                    conn.execute(settle, {"ids": list(part), "new_status": status, "now": now})
            _log_tool_failures(conn, pid, version, result.tool_failures, len(keys), actor=actor, now=now)
        return RecordResult(labeled=len(labels), queued=len(tasks), votes=len(votes), fenced=fenced)

    def _writable_items(self, conn: Connection, project_id: int, keys: list[str], lease_token: str | None,
                        now: datetime) -> dict[str, int]:
        """external id -> item id for the items this call may write (row-locked on PostgreSQL). With a lease token:
        the items of ``keys`` leased under it, unexpired, found by the token among the project's leased items (along
        ``ix_item_claim``: no list of keys to bind, no timestamps to parse); without one, by their keys."""
        if lease_token is not None:
            wanted = set(keys)
            rows: Iterable[Row[int, str]] = conn.execute(self._statement("record_leased", lambda: self._lock(select(
                item_t.c.id, item_t.c.external_id).where(
                item_t.c.project_id == bindparam("pid"), item_t.c.status == "leased",
                item_t.c.lease_token == bindparam("token"), item_t.c.lease_expires_at > bindparam("now")))),
                {"pid": project_id, "token": lease_token, "now": now})
            return {key: item_id for item_id, key in rows if key in wanted}
        query = self._statement("record_writable", lambda: self._lock(select(
            item_t.c.id, item_t.c.external_id, item_t.c.status, item_t.c.lease_expires_at).where(
            item_t.c.project_id == bindparam("pid"), one_of(item_t.c.external_id, "keys", sqlite=self.sqlite))))
        out: dict[str, int] = {}
        for part in chunks(keys):
            found: Iterable[Row[int, str, str, datetime | None]] = conn.execute(
                query, {"pid": project_id, "keys": list(part)})
            for item_id, key, status, expires in found:
                if status == "pending" or (status == "leased" and not (expires is not None and expires > now)):
                    out[key] = item_id
        return out

    def _lock(self, query: Any) -> Any:
        return query if self.sqlite else query.with_for_update()


def _log_tool_failures(conn: Connection, project_id: int, version: int, failures: dict[str, str], items: int, *,
                       actor: str, now: datetime) -> None:
    """One ``tool.failed`` audit entry per tool whose call raised in the graph run (``BatchResult.tool_failures``)."""
    for tool, why in failures.items():
        conn.execute(insert(audit_t).values(project_id=project_id, action="tool.failed", actor=actor, created_at=now,
                                            detail={"tool": tool, "reason": why[:500], "items": items,
                                                    "policy_version": version}))


def _check_decisions(result: BatchResult, policy: Policy) -> None:
    labels = set(policy.labels)
    for d in result.decisions:
        if d.action == "accept":
            if d.label not in labels:
                raise InputError(f"decision for {d.key!r}: accepted label {d.label!r} is not in {policy.key}'s labels")
        elif d.action in ("escalate", "audit"):
            if d.label is not None and d.label not in labels:
                raise InputError(f"decision for {d.key!r}: suggestion {d.label!r} is not in {policy.key}'s labels")
        else:
            raise InputError(f"decision for {d.key!r}: unknown action {d.action!r}")
