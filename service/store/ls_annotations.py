"""Storage of Label Studio annotations (``ls_annotation``): every annotation of an item as Label Studio sent it, and
the item's ground truth derived from them. Functions over a :class:`~service.store.SqlStore` (one transaction per
call, the project id first in every query).

The rule, the same for import, create, update and delete: an item's ground truth is the label of its latest
annotation that is not skipped (:func:`service.api.labelstudio_records.latest_order`), written by
:func:`~service.store.labelstudio.put_human_labels` (a changed label is a correction); an item left with no such
annotation loses the human label Label Studio gave it (:func:`~service.store.labelstudio.remove_human_labels`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any

from sqlalchemy import Row, delete, insert, select, update

from service.api.labelstudio import ANNOTATION_REASON, annotation_reason, task_id_of
from service.api.labelstudio_records import AnnotationRecord, latest_order
from service.store.base import as_utc, chunks, item_t, label_t, ls_annotation_t
from service.store.db import read_tx, write_tx
from service.store.labelstudio import HumanAnswer, put_human_labels, remove_human_labels

if TYPE_CHECKING:
    from service.store import SqlStore

IMPORT_REASON = "label studio import of task "


@dataclass(frozen=True, slots=True)
class StoredAnnotation:
    row: int
    annotation_id: int | None
    label: str | None
    was_cancelled: bool
    ground_truth: bool
    result: list[dict[str, Any]]
    completed_by: Any
    lead_time: float | None
    created_at: datetime
    updated_at: datetime | None


def _values(a: AnnotationRecord, now: datetime) -> dict[str, Any]:
    return {"annotation_id": a.annotation_id, "label": a.label, "was_cancelled": a.was_cancelled,
            "ground_truth": a.ground_truth, "result": a.result, "completed_by": a.completed_by,
            "lead_time": a.lead_time, "created_at": as_utc(a.created_at) if a.created_at else now,
            "updated_at": as_utc(a.updated_at) if a.updated_at else None}


def record_annotations(
    store: SqlStore, project: str, by_key: Mapping[str, Sequence[AnnotationRecord]], *, now: datetime | None = None
) -> None:
    """Keep the annotations of existing items: one with a Label Studio id replaces the row of that id (an update),
    one without an id is added unless the item has the same one already (re-imports add nothing)."""
    now = as_utc(now)
    if not any(by_key.values()):
        return
    with write_tx(store.engine) as conn:
        pid = store._project_id(conn, project)
        ids: dict[str, int] = {}
        for part in chunks([k for k, v in by_key.items() if v]):
            ids.update(conn.execute(select(item_t.c.external_id, item_t.c.id).where(
                item_t.c.project_id == pid, item_t.c.external_id.in_(part))).all())
        rows = _rows(conn, list(ids.values()))
        for key, annotations in by_key.items():
            item_id = ids[key]
            have = rows.get(item_id, [])
            for a in annotations:
                values = _values(a, now)
                same = next((r for r in have if a.annotation_id is not None and r.annotation_id == a.annotation_id),
                            None)
                if same is not None:
                    conn.execute(update(ls_annotation_t).where(ls_annotation_t.c.id == same.row).values(**values))
                    continue
                if a.annotation_id is None and any(
                    r.annotation_id is None and (r.result, r.was_cancelled, r.created_at) ==
                    (a.result, a.was_cancelled, values["created_at"]) for r in have
                ):
                    continue
                conn.execute(insert(ls_annotation_t).values(project_id=pid, item_id=item_id, **values))


def delete_annotations(store: SqlStore, project: str, annotation_ids: Sequence[int]) -> list[str]:
    """Delete the rows of these Label Studio annotations; returns the items that had them."""
    with write_tx(store.engine) as conn:
        pid = store._project_id(conn, project)
        found: list[tuple[int, str]] = []
        for part in chunks(list(dict.fromkeys(annotation_ids))):
            found.extend(conn.execute(
                select(ls_annotation_t.c.id, item_t.c.external_id)
                .join(item_t, item_t.c.id == ls_annotation_t.c.item_id)
                .where(ls_annotation_t.c.project_id == pid, ls_annotation_t.c.annotation_id.in_(part))).all())
        for part in chunks([f[0] for f in found]):
            conn.execute(delete(ls_annotation_t).where(ls_annotation_t.c.id.in_(part)))
    return list(dict.fromkeys(f[1] for f in found))


def annotations_of(store: SqlStore, project: str, keys: Sequence[str]) -> dict[str, list[StoredAnnotation]]:
    """The kept annotations of these items, oldest first (the last one that is not skipped is the ground truth)."""
    with read_tx(store.engine) as conn:
        pid = store._project_id(conn, project)
        ids: dict[int, str] = {}
        for part in chunks(list(dict.fromkeys(keys))):
            pairs: Sequence[Row[str, int]] = conn.execute(select(item_t.c.external_id, item_t.c.id).where(
                item_t.c.project_id == pid, item_t.c.external_id.in_(part))).all()
            ids.update((i, k) for k, i in pairs)
        return {ids[item_id]: found for item_id, found in _rows(conn, list(ids)).items()}


def _rows(conn: Any, item_ids: list[int]) -> dict[int, list[StoredAnnotation]]:
    c = ls_annotation_t.c
    out: dict[int, list[StoredAnnotation]] = {}
    for part in chunks(item_ids):
        query = select(c.item_id, c.id, c.annotation_id, c.label, c.was_cancelled, c.ground_truth, c.result,
                       c.completed_by, c.lead_time, c.created_at, c.updated_at).where(c.item_id.in_(part))
        for r in conn.execute(query):
            out.setdefault(r[0], []).append(StoredAnnotation(
                r[1], r[2], r[3], bool(r[4]), bool(r[5]), list(r[6] or []), r[7], r[8], as_utc(r[9]),
                as_utc(r[10]) if r[10] is not None else None))
    for found in out.values():
        found.sort(key=lambda a: latest_order(a.created_at, a.annotation_id, a.row))
    return out


def sync_ground_truth(
    store: SqlStore, project: str, keys: Sequence[str], *, now: datetime | None = None
) -> tuple[list[str], list[str], list[str]]:
    """Apply the rule (module doc) to these items. Returns (written, unchanged, removed) item keys."""
    kept = annotations_of(store, project, keys)
    answers: list[HumanAnswer] = []
    bare: list[str] = []
    for key in dict.fromkeys(keys):
        labeled = [(a.label, a) for a in kept.get(key, []) if a.label is not None and not a.was_cancelled]
        if labeled:
            label, last = labeled[-1]
            answers.append(HumanAnswer(key, label, annotation_reason(last.annotation_id, task_id_of(key))))
        else:
            bare.append(key)
    written, unchanged = put_human_labels(store, project, answers, now=now)
    removed = remove_human_labels(store, project, _label_studio_reasons(store, project, bare), now=now)
    return written, unchanged, removed


def _label_studio_reasons(store: SqlStore, project: str, keys: Sequence[str]) -> list[str]:
    """The reasons of the human labels Label Studio gave these items (an annotation's, or a task import's)."""
    if not keys:
        return []
    with read_tx(store.engine) as conn:
        pid = store._project_id(conn, project)
        reasons: list[str] = []
        for part in chunks(list(keys)):
            rows: Iterable[Row[str]] = conn.execute(
                select(label_t.c.reason).join(item_t, item_t.c.id == label_t.c.item_id)
                .where(item_t.c.project_id == pid, item_t.c.external_id.in_(part), label_t.c.source == "human"))
            reasons.extend(r for (r,) in rows
                           if r is not None and (r.startswith(ANNOTATION_REASON) or r.startswith(IMPORT_REASON)))
    return reasons
