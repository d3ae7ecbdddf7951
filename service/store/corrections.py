"""Correcting an item's label after the fact, and reading the corrections back.

A correction replaces the item's current label (its latest label row) with a ``human`` label under the same policy
version: the label table keeps one row per item and policy version (``uq_label_item_version``), so the old row is
deleted and the new one inserted in the same transaction. The new row gets a new, larger id, which is what makes
the change reach every consumer that follows label ids: the export's cursor and the event stream deliver it as a
new record, and the workers' answer feed (human labels by id) hands it to the learner. The replaced label (value,
source, confidence, id) stays readable in ``label_correction`` (one row per correction, never deleted) and in a
``label.corrected`` audit entry written in the same transaction.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Row, delete, func, insert, select, update

from policies import ConflictError, InputError, NotFoundError
from service.store.audit import AuditMixin
from service.store.base import as_utc, correction_t, item_t, label_t
from service.store.db import read_tx, write_tx

CORRECTION_CONFIDENCE = 1.0  # a human's label, like a settled review's unanimous answer
_WAITING = {
    "pending": "it is waiting for the agent",
    "leased": "the agent is labeling it now",
    "in_review": "it is queued for human review; answer its review task instead",
    "failed": "the agent failed on it; re-queue it (POST /projects/{project}/items/requeue) or let its review task "
              "settle it",
}


@dataclass(slots=True, frozen=True)
class Correction:
    """One correction: the label it wrote (``label_id``) and the one it replaced."""

    id: int
    external_id: str
    policy_version: int
    label_id: int
    label: str
    replaced_label_id: int
    replaced_label: str
    replaced_source: str
    replaced_confidence: float | None
    reviewer: str
    note: str | None
    actor: str
    created_at: datetime


@dataclass(slots=True, frozen=True)
class CorrectionOutcome:
    """What :meth:`CorrectionsMixin.correct_label` did: ``correction`` is None when the item already had that label
    (nothing written)."""

    external_id: str
    correction: Correction | None


class CorrectionsMixin(AuditMixin):
    def correct_label(self, project: str, key: str, label: str, *, reviewer: str, note: str | None, actor: str,
                      now: datetime | None = None) -> CorrectionOutcome:
        """Replace the item's current label with ``label`` (see the module doc). NotFoundError for an unknown item,
        ConflictError for an item without a label yet, InputError for a label outside the policy of the item's
        label. The item's current label already being ``label`` is a no-op (no row, no audit entry)."""
        now = as_utc(now)
        with write_tx(self.engine) as conn:
            pid = self._project_id(conn, project)
            query = select(item_t.c.id, item_t.c.status).where(item_t.c.project_id == pid, item_t.c.external_id == key)
            if not self.sqlite:
                query = query.with_for_update()  # corrections of one item take turns
            row: Row[int, str] | None = conn.execute(query).first()
            if row is None:
                raise NotFoundError(f"item {key!r} does not exist in project {project!r}")
            item_id, status = row
            current = conn.execute(select(label_t).where(label_t.c.item_id == item_id)
                                   .order_by(label_t.c.id.desc()).limit(1)).mappings().first()
            if current is None or status != "labeled":
                why = _WAITING.get(status, f"its status is {status!r}").replace("{project}", project)
                raise ConflictError(f"item {key!r} has no label to correct yet: {why}")
            version = current["policy_version"]
            labels = self._policy(conn, pid, version).labels
            if label not in labels:
                raise InputError(f"label {label!r} is not one of the labels of policy version {version} that "
                                 f"labeled item {key!r}: {list(labels)}")
            if current["label"] == label:
                return CorrectionOutcome(key, None)
            fresh = self._replacement_label_ids(conn, 1)  # above the replaced one (SQLite would reuse its id)
            explicit: dict[str, Any] = {} if fresh is None else {"id": fresh[0]}
            conn.execute(delete(label_t).where(label_t.c.id == current["id"]))
            new_id: int = conn.execute(insert(label_t).values(
                **explicit, project_id=pid, item_id=item_id, policy_version=version, label=label,
                confidence=CORRECTION_CONFIDENCE, source="human", threshold=None, cost=0.0,
                reason=f"correction by {reviewer}", created_at=now,
            ).returning(label_t.c.id)).scalar_one()
            values: dict[str, Any] = {
                "project_id": pid, "item_id": item_id, "policy_version": version, "label_id": new_id, "label": label,
                "replaced_label_id": current["id"], "replaced_label": current["label"],
                "replaced_source": current["source"], "replaced_confidence": current["confidence"],
                "reviewer": reviewer, "note": note, "actor": actor, "created_at": now,
            }
            correction_id: int = conn.execute(insert(correction_t).values(**values)
                                         .returning(correction_t.c.id)).scalar_one()
            conn.execute(update(item_t).where(item_t.c.id == item_id).values(updated_at=now))
            self._log(conn, pid, "label.corrected", actor, {
                "external_id": key, "policy_version": version, "reviewer": reviewer, "note": note,
                "before": {"label_id": current["id"], "label": current["label"], "source": current["source"],
                           "confidence": current["confidence"]},
                "after": {"label_id": new_id, "label": label, "source": "human",
                          "confidence": CORRECTION_CONFIDENCE},
            }, now)
        values.pop("project_id")
        values.pop("item_id")
        return CorrectionOutcome(key, Correction(id=correction_id, external_id=key, **values))

    def corrections_of(self, project: str, key: str) -> list[Correction]:
        """The item's corrections, oldest first (empty for an unknown item)."""
        with read_tx(self.engine) as conn:
            pid = self._project_id(conn, project)
            item_id = conn.execute(select(item_t.c.id).where(item_t.c.project_id == pid,
                                                             item_t.c.external_id == key)).scalar()
            if item_id is None:
                return []
            rows = conn.execute(select(correction_t).where(correction_t.c.item_id == item_id)
                                .order_by(correction_t.c.id)).mappings().all()
        return [correction_from_row(key, r) for r in rows]

    def count_corrections(self, project: str) -> dict[str, int]:
        """Corrections by the source of the label they replaced (agent: an auto label found wrong)."""
        with read_tx(self.engine) as conn:
            pid = self._project_id(conn, project)
            rows: Sequence[Row[str, int]] = conn.execute(select(correction_t.c.replaced_source, func.count())
                                .where(correction_t.c.project_id == pid)
                                .group_by(correction_t.c.replaced_source)).all()
        counts = {"agent": 0, "human": 0}
        counts.update({source: int(n) for source, n in rows})
        return counts


def correction_from_row(key: str, row: Any) -> Correction:
    """A ``label_correction`` row (a mapping) of item ``key``."""
    return Correction(id=row["id"], external_id=key, policy_version=row["policy_version"], label_id=row["label_id"],
                      label=row["label"], replaced_label_id=row["replaced_label_id"],
                      replaced_label=row["replaced_label"], replaced_source=row["replaced_source"],
                      replaced_confidence=row["replaced_confidence"], reviewer=row["reviewer"], note=row["note"],
                      actor=row["actor"], created_at=row["created_at"])
