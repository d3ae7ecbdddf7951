"""Storage for the Label Studio bridge: human labels that come from Label Studio annotations, their removal, and the
reads the export and ``/predict`` need. Functions over a :class:`~service.store.SqlStore` (same conventions: one
transaction per call, the project id first in every query).

A Label Studio annotation is ground truth like a settled review: a ``human`` label under the project's active
policy version (confidence 1, reason ``label studio annotation <id>``), the item ``labeled``, and any open or claimed
review task of the item closed (a reviewer holding it gets the usual stale-lease 409 on submit). The database keeps
one label per item and policy version, so the annotation *replaces* the item's label under the active version (the
agent's votes stay as evidence). The human label gets a new id, so the workers' answer feed picks it up and the
learner trains on it. An annotation that changes the label is recorded as a correction (``label_correction``, as
``POST .../items/{id}/correction`` does: the learner replaces the item's training label and leaves the calibration
set alone); another annotation with the same human label only notes its id on the row (the learner has it).
Removing an annotation deletes its label; an item left without any label goes back to review (its task under the
active version is reopened) or, without one, back to the agent (``pending``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Row, delete, func, insert, select, update

from policies import InputError, NotFoundError
from service.store.base import as_utc, chunks, correction_t, item_t, label_t, task_t
from service.store.db import read_tx, write_tx

if TYPE_CHECKING:
    from service.store import SqlStore

LABEL_STUDIO = "label-studio"  # reviewer and actor of the corrections annotations make
_RELEASED = {"lease_owner": None, "lease_token": None, "lease_expires_at": None}
_TASK_FREE = {"reviewer": None, "lease_token": None, "lease_expires_at": None}


@dataclass(frozen=True, slots=True)
class HumanAnswer:
    """One item's label from Label Studio; ``reason`` names the annotation it came from."""

    key: str
    label: str
    reason: str


@dataclass(frozen=True, slots=True)
class StoredLabel:
    id: int
    label: str
    confidence: float | None
    source: str
    policy_version: int
    reason: str
    created_at: datetime


@dataclass(slots=True)
class StoredItem:
    """An item with its latest human and latest agent label (any policy version)."""

    key: str
    text: str | None
    meta: dict[str, Any]
    status: str
    seq: int
    human: StoredLabel | None = None
    agent: StoredLabel | None = None

    @property
    def latest(self) -> StoredLabel | None:
        """The label the item status route shows: the most recent one."""
        labels = [lab for lab in (self.human, self.agent) if lab is not None]
        return max(labels, key=lambda lab: lab.id) if labels else None


@dataclass(frozen=True, slots=True)
class _Current:
    """An item's label under the active version, as an annotation finds it."""

    id: int
    label: str
    source: str
    reason: str | None
    confidence: float | None


def _record_corrections(conn: Connection, pid: int, version: int, changed: dict[int, tuple[_Current, HumanAnswer]],
                        new_ids: dict[int, int], now: datetime) -> None:
    """An annotation that changes an item's label is a correction (``label_correction``, as the API's correction
    route writes): the answer feed marks it, so the learner replaces the item's training label instead of adding a
    second answer, and leaves the calibration set alone; metrics count it by the replaced label's source.
    ``new_ids``: item id -> the id of the label just written."""
    conn.execute(insert(correction_t), [
        {"project_id": pid, "item_id": item_id, "policy_version": version, "label_id": new_ids[item_id],
         "label": a.label, "replaced_label_id": old.id, "replaced_label": old.label, "replaced_source": old.source,
         "replaced_confidence": old.confidence, "reviewer": LABEL_STUDIO, "note": a.reason, "actor": LABEL_STUDIO,
         "created_at": now}
        for item_id, (old, a) in changed.items()])


def put_human_labels(
    store: SqlStore, project: str, answers: Sequence[HumanAnswer], *, now: datetime | None = None
) -> tuple[list[str], list[str]]:
    """Write the answers as human labels (see the module doc). Returns (written, unchanged): an item whose label
    under the active version is already this human label from this annotation is left alone (re-imports and
    repeated webhooks are no-ops). NotFoundError for an unknown item, InputError for a label outside the policy."""
    now = as_utc(now)
    if len({a.key for a in answers}) != len(answers):
        raise InputError("an item is answered twice in one call; send one label per task")
    written: list[str] = []
    unchanged: list[str] = []
    if not answers:
        return written, unchanged
    with write_tx(store.engine) as conn:
        pid = store._project_id(conn, project)
        version = store._active_version(conn, pid)
        labels = store._policy(conn, pid, version).labels
        for a in answers:
            if a.label not in labels:
                raise InputError(f"{a.key}: label {a.label!r} is not one of the project's labels {labels}")
        ids = _item_ids(store, conn, pid, [a.key for a in answers])
        current = _current_labels(conn, list(ids.values()), version)
        stale: list[int] = []
        rows: list[dict[str, Any]] = []
        changed: dict[int, tuple[_Current, HumanAnswer]] = {}  # item id -> (the label replaced, the answer)
        for a in answers:
            item_id = ids[a.key]
            old = current.get(item_id)
            if old is not None and (old.label, old.source, old.reason) == (a.label, "human", a.reason):
                unchanged.append(a.key)
                continue
            if old is not None and (old.label, old.source) == (a.label, "human"):
                # another annotation with the same label: the learner has this answer already; keep the row (and
                # its id, so nobody is sent it again), note the annotation that now holds it
                conn.execute(update(label_t).where(label_t.c.id == old.id).values(reason=a.reason))
                written.append(a.key)
                continue
            if old is not None:
                stale.append(old.id)
                if old.label != a.label:
                    changed[item_id] = (old, a)
            rows.append(_human_label_row(pid, item_id, version, a, now))
            written.append(a.key)
        fresh = store._replacement_label_ids(conn, len(rows)) if stale else None  # above the replaced ones
        if fresh is not None:
            for row, label_id in zip(rows, fresh, strict=True):
                row["id"] = label_id
        for part in chunks(stale):
            conn.execute(delete(label_t).where(label_t.c.id.in_(part)))
        if rows:
            written_ids: Iterable[Row[int, int]] = conn.execute(
                insert(label_t).returning(label_t.c.item_id, label_t.c.id), rows)
            new_ids = {item_id: label_id for item_id, label_id in written_ids}
            if changed:
                _record_corrections(conn, pid, version, changed, new_ids, now)
        _settle_items(conn, [ids[k] for k in written], now)
    return written, unchanged


def _human_label_row(pid: int, item_id: int, version: int, a: HumanAnswer, now: datetime) -> dict[str, Any]:
    return {
        "project_id": pid,
        "item_id": item_id,
        "policy_version": version,
        "label": a.label,
        "confidence": 1.0,
        "source": "human",
        "threshold": None,
        "cost": 0.0,
        "reason": a.reason,
        "created_at": now,
    }


def _current_labels(conn: Connection, item_ids: list[int], version: int) -> dict[int, _Current]:
    """Item id -> its label under ``version`` (where it has one)."""
    current: dict[int, _Current] = {}
    for part in chunks(item_ids):
        query = select(label_t.c.item_id, label_t.c.id, label_t.c.label, label_t.c.source, label_t.c.reason,
                       label_t.c.confidence).where(label_t.c.item_id.in_(part), label_t.c.policy_version == version)
        current.update((r[0], _Current(*r[1:])) for r in conn.execute(query))
    return current


def _settle_items(conn: Connection, touched: list[int], now: datetime) -> None:
    """The items ``touched`` are labeled: their open or claimed review tasks are done, their leases released."""
    for part in chunks(touched):
        conn.execute(
            update(task_t)
            .where(task_t.c.item_id.in_(part), task_t.c.status.in_(("open", "claimed")))
            .values(status="done", updated_at=now, **_TASK_FREE)
        )
        conn.execute(
            update(item_t)
            .where(item_t.c.id.in_(part))
            .values(status="labeled", error=None, updated_at=now, **_RELEASED)
        )


def remove_human_labels(
    store: SqlStore, project: str, reasons: Sequence[str], *, now: datetime | None = None
) -> list[str]:
    """Delete the project's human labels with these reasons (the annotations' ids); returns the items touched. An
    item left without any label goes back to review (task of the active version reopened) or to the agent."""
    now = as_utc(now)
    if not reasons:
        return []
    with write_tx(store.engine) as conn:
        pid = store._project_id(conn, project)
        version = store._active_version(conn, pid)
        found: list[tuple[int, int, str]] = []
        for reason_part in chunks(list(dict.fromkeys(reasons))):
            found.extend(
                conn.execute(
                    select(label_t.c.id, label_t.c.item_id, item_t.c.external_id)
                    .join(item_t, item_t.c.id == label_t.c.item_id)
                    .where(label_t.c.project_id == pid, label_t.c.source == "human", label_t.c.reason.in_(reason_part))
                ).all()
            )
        if not found:
            return []
        for part in chunks([f[0] for f in found]):
            conn.execute(delete(label_t).where(label_t.c.id.in_(part)))
        item_ids = list(dict.fromkeys(f[1] for f in found))
        labeled = {
            r[0]
            for part in chunks(item_ids)
            for r in conn.execute(select(label_t.c.item_id).where(label_t.c.item_id.in_(part)).distinct())
        }
        bare = [i for i in item_ids if i not in labeled]
        tasks = {
            r[0]: r[1]
            for part in chunks(bare)
            for r in conn.execute(
                select(task_t.c.item_id, task_t.c.id).where(
                    task_t.c.item_id.in_(part), task_t.c.policy_version == version
                )
            )
        }
        for part in chunks([tasks[i] for i in bare if i in tasks]):
            conn.execute(
                update(task_t).where(task_t.c.id.in_(part)).values(status="open", updated_at=now, **_TASK_FREE)
            )
        for ids_, values in (
            ([i for i in bare if i in tasks], {"status": "in_review"}),
            ([i for i in bare if i not in tasks], {"status": "pending", "attempts": 0}),
        ):
            for part in chunks(ids_):
                conn.execute(
                    update(item_t)
                    .where(item_t.c.id.in_(part))
                    .values(updated_at=now, error=None, **values, **_RELEASED)
                )
    return list(dict.fromkeys(f[2] for f in found))


def stored_items(store: SqlStore, project: str, keys: Sequence[str]) -> dict[str, StoredItem]:
    """The items among ``keys`` that exist, with their latest human and agent labels."""
    with read_tx(store.engine) as conn:
        pid = store._project_id(conn, project)
        rows: list[Any] = []
        for part in chunks(list(dict.fromkeys(keys))):
            rows.extend(
                conn.execute(
                    select(
                        item_t.c.id, item_t.c.external_id, item_t.c.text, item_t.c.meta, item_t.c.status, item_t.c.seq
                    ).where(item_t.c.project_id == pid, item_t.c.external_id.in_(part))
                )
            )
        return _with_labels(conn, rows)


def items_page(store: SqlStore, project: str, *, after_seq: int, limit: int) -> list[StoredItem]:
    """Items with ``seq > after_seq`` in arrival order, with their labels (the export's pages)."""
    with read_tx(store.engine) as conn:
        pid = store._project_id(conn, project)
        rows = conn.execute(
            select(item_t.c.id, item_t.c.external_id, item_t.c.text, item_t.c.meta, item_t.c.status, item_t.c.seq)
            .where(item_t.c.project_id == pid, item_t.c.seq > after_seq)
            .order_by(item_t.c.seq)
            .limit(limit)
        ).all()
        items = _with_labels(conn, rows)
    return sorted(items.values(), key=lambda it: it.seq)


def label_marks(store: SqlStore, project: str) -> tuple[tuple[int, int], tuple[int, int]]:
    """(largest id, count) of the project's human labels, and of all its labels: each changes whenever such labels
    are added, replaced or removed (new labels get new, larger ids)."""
    with read_tx(store.engine) as conn:
        pid = store._project_id(conn, project)
        marks = []
        for human in (True, False):
            query = select(func.max(label_t.c.id), func.count()).where(label_t.c.project_id == pid)
            if human:
                query = query.where(label_t.c.source == "human")
            mark: Row[int | None, int] = conn.execute(query).one()
            top, count = mark
            marks.append((int(top or 0), int(count)))
    return marks[0], marks[1]


def human_label_mark(store: SqlStore, project: str) -> tuple[int, int]:
    """(largest id, count) of the project's human labels: changes whenever ground truth is added or removed."""
    return label_marks(store, project)[0]


def _item_ids(store: SqlStore, conn: Any, pid: int, keys: list[str]) -> dict[str, int]:
    out: dict[str, int] = {}
    for part in chunks(keys):
        query = select(item_t.c.external_id, item_t.c.id).where(
            item_t.c.project_id == pid, item_t.c.external_id.in_(part)
        )
        if not store.sqlite:
            query = query.with_for_update()
        out.update((k, i) for k, i in conn.execute(query))
    missing = next((k for k in keys if k not in out), None)
    if missing is not None:
        raise NotFoundError(f"item {missing!r} does not exist in this project; import its task first")
    return out


def _with_labels(conn: Any, rows: Sequence[Any]) -> dict[str, StoredItem]:
    by_id = {r[0]: StoredItem(key=r[1], text=r[2], meta=dict(r[3] or {}), status=r[4], seq=r[5]) for r in rows}
    cols = (
        label_t.c.item_id,
        label_t.c.id,
        label_t.c.label,
        label_t.c.confidence,
        label_t.c.source,
        label_t.c.policy_version,
        label_t.c.reason,
        label_t.c.created_at,
    )
    for part in chunks(list(by_id)):
        for r in conn.execute(select(*cols).where(label_t.c.item_id.in_(part)).order_by(label_t.c.id)):
            label = StoredLabel(r[1], r[2], r[3], r[4], r[5], r[6], r[7])
            item = by_id[r[0]]
            if label.source == "human":
                item.human = label  # ascending ids: the last one wins
            else:
                item.agent = label
    return {it.key: it for it in by_id.values()}
