"""What the learner and the metrics read: ground truth, calibration records, model versions, labels, votes."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import Row, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from agent.ports import CalibrationRecord, GroundTruth
from service.store.base import (
    StoreBase,
    calib_t,
    chunks,
    correction_t,
    image_t,
    item_t,
    label_t,
    model_t,
    to_item,
    vote_t,
    with_image,
)
from service.store.db import read_tx, write_tx
from service.store.tables import LABEL_SOURCES, LabelPublic, ModelVersionPublic, utcnow
from tools.base import ModelInfo, Vote


class LearningMixin(StoreBase):
    def load_ground_truth(self, project: str, limit: int | None = None) -> list[GroundTruth]:
        """Human-settled items, oldest first (the most recent ``limit`` when given); one per item (its latest, marked
        ``correction`` when a correction wrote it)."""
        with read_tx(self.engine) as conn:
            pid = self._project_id(conn, project)
            query = (with_image(select(label_t.c.label, item_t.c.external_id, item_t.c.text, item_t.c.meta,
                                       image_t.c.data, correction_t.c.id)
                                .join(item_t, item_t.c.id == label_t.c.item_id))
                     .outerjoin(correction_t, correction_t.c.label_id == label_t.c.id)
                     .where(label_t.c.project_id == pid, label_t.c.source == "human")
                     .order_by(label_t.c.id.desc()))
            if limit is not None:
                query = query.limit(limit)
            rows: Sequence[Row[str, str, str | None, dict[str, Any] | None, bytes | None, int | None]] = (
                conn.execute(query).all())
        seen: set[str] = set()
        out: list[GroundTruth] = []
        for label, key, text, meta, image, corrected in rows:  # newest first: keep each item's latest answer
            if key not in seen:
                seen.add(key)
                out.append(GroundTruth(item=to_item(key, text, meta, image), label=label,
                                       correction=corrected is not None))
        out.reverse()
        return out

    def load_calibration(self, project: str, limit: int, *, kinds: Sequence[str] | None = None
                         ) -> list[CalibrationRecord]:
        """The ``limit`` most recent calibration records (by item arrival), oldest first; ``kinds`` filters
        (e.g. ``("cold_start", "audit")`` for the out-of-sample ones)."""
        with read_tx(self.engine) as conn:
            pid = self._project_id(conn, project)
            query = (select(calib_t.c.item_key, calib_t.c.confidence, calib_t.c.predicted, calib_t.c.truth,
                            calib_t.c.kind, calib_t.c.seq)
                     .where(calib_t.c.project_id == pid)
                     .order_by(calib_t.c.seq.desc(), calib_t.c.id.desc()).limit(limit))
            if kinds is not None:
                query = query.where(calib_t.c.kind.in_(list(kinds)))
            rows = conn.execute(query).all()
        return [CalibrationRecord(key=r[0], confidence=r[1], predicted=r[2], truth=r[3], kind=r[4], seq=r[5])
                for r in reversed(rows)]

    def load_calibration_for(self, project: str, keys: Sequence[str]) -> dict[str, CalibrationRecord]:
        """The latest calibration record of each of these items (by external id), where one exists."""
        out: dict[str, CalibrationRecord] = {}
        with read_tx(self.engine) as conn:
            pid = self._project_id(conn, project)
            for part in chunks(list(keys)):
                query = (select(calib_t.c.item_key, calib_t.c.confidence, calib_t.c.predicted, calib_t.c.truth,
                                calib_t.c.kind, calib_t.c.seq)
                         .where(calib_t.c.project_id == pid, calib_t.c.item_key.in_(part)).order_by(calib_t.c.id))
                for r in conn.execute(query):
                    out[r[0]] = CalibrationRecord(key=r[0], confidence=r[1], predicted=r[2], truth=r[3], kind=r[4],
                                                  seq=r[5])
        return out

    def save_model_version(self, project: str, policy_key: str, info: ModelInfo) -> None:
        """Remember a trained model version (idempotent per project, policy, tool and version)."""
        insert_ = sqlite_insert if self.sqlite else pg_insert
        stmt = self._statement("save_model_version", lambda: insert_(model_t).on_conflict_do_nothing(
            index_elements=["project_id", "policy_key", "tool", "version"]))
        with write_tx(self.engine) as conn:
            pid = self._project_id(conn, project)
            conn.execute(stmt, {"project_id": pid, "policy_key": policy_key, "tool": info.tool, "version": info.version,
                                "trained_on": info.trained_on, "metrics": dict(info.metrics), "created_at": utcnow()})

    def list_model_versions(self, project: str, tool: str | None = None) -> list[ModelVersionPublic]:
        """Model versions, oldest first."""
        with read_tx(self.engine) as conn:
            pid = self._project_id(conn, project)
            query = select(model_t).where(model_t.c.project_id == pid).order_by(model_t.c.id)
            if tool is not None:
                query = query.where(model_t.c.tool == tool)
            rows = conn.execute(query).mappings().all()
        return [ModelVersionPublic.model_validate(dict(r)) for r in rows]

    def load_labels(self, project: str, keys: Sequence[str] | None = None) -> dict[str, list[LabelPublic]]:
        """Labels per item key, oldest first (one per policy version); all items when ``keys`` is None."""
        out: dict[str, list[LabelPublic]] = defaultdict(list)
        with read_tx(self.engine) as conn:
            pid = self._project_id(conn, project)
            base = (select(item_t.c.external_id, label_t).join(item_t, item_t.c.id == label_t.c.item_id)
                    .where(label_t.c.project_id == pid).order_by(label_t.c.id))
            parts: list[Any] = [None] if keys is None else list(chunks(list(keys)))
            for part in parts:
                query = base if part is None else base.where(item_t.c.external_id.in_(part))
                for r in conn.execute(query).mappings():
                    row = dict(r)
                    out[row.pop("external_id")].append(LabelPublic.model_validate(row))
        return dict(out)

    def load_votes(self, project: str, keys: Sequence[str], *, policy_version: int | None = None
                   ) -> dict[str, list[Vote]]:
        """The votes recorded at decision time, per item key (to explain a label or train the aggregator)."""
        out: dict[str, list[Vote]] = defaultdict(list)
        with read_tx(self.engine) as conn:
            pid = self._project_id(conn, project)
            for part in chunks(list(keys)):
                # Item ids first (the unique (project, external_id) index), then votes by item id (ix_vote_item):
                # joining in one statement let PostgreSQL scan every vote of the project on each call.
                pairs: Sequence[Row[int, str]] = conn.execute(select(item_t.c.id, item_t.c.external_id).where(
                    item_t.c.project_id == pid, item_t.c.external_id.in_(part))).all()
                ids = dict(pairs)
                if not ids:
                    continue
                query = (select(vote_t.c.item_id, vote_t.c.tool, vote_t.c.distribution, vote_t.c.cost,
                                vote_t.c.evidence)
                         .where(vote_t.c.item_id.in_(list(ids))).order_by(vote_t.c.id))
                if policy_version is not None:
                    query = query.where(vote_t.c.policy_version == policy_version)
                votes: Iterable[Row[int, str, dict[str, float] | None, float, str]] = conn.execute(query)
                for item_id, tool, dist, cost, evidence in votes:
                    out[ids[item_id]].append(Vote(tool=tool, distribution=dist, cost=cost, evidence=evidence))
        return dict(out)

    def load_vote_training(self, project: str, keys: Sequence[str], *, policy_key: str,
                           policy_version: int) -> dict[str, int]:
        """For each of these items with decision-time votes: the ground-truth rows the models that voted on it had
        been fitted on (the most over its votes; 0 when no voting model had been fitted yet). A restarted learner
        weighs the pool's rows by it (``agent.aggregate.maturity_weights``)."""
        out: dict[str, int] = {}
        with read_tx(self.engine) as conn:
            pid = self._project_id(conn, project)
            its_model = ((model_t.c.project_id == pid) & (model_t.c.policy_key == policy_key)
                         & (model_t.c.tool == vote_t.c.tool) & (model_t.c.version == vote_t.c.model_version))
            for part in chunks(list(keys)):
                items = select(item_t.c.id, item_t.c.external_id).where(item_t.c.project_id == pid,
                                                                         item_t.c.external_id.in_(part))
                ids: dict[int, str] = {int(r[0]): str(r[1]) for r in conn.execute(items)}
                if not ids:
                    continue
                query = (select(vote_t.c.item_id, func.max(func.coalesce(model_t.c.trained_on, 0)))
                         .outerjoin(model_t, its_model)
                         .where(vote_t.c.item_id.in_(list(ids)), vote_t.c.policy_version == policy_version)
                         .group_by(vote_t.c.item_id))
                out.update({ids[int(r[0])]: int(r[1]) for r in conn.execute(query)})
        return out

    def count_labels(self, project: str) -> dict[str, int]:
        """Labels per source (agent, human)."""
        with read_tx(self.engine) as conn:
            pid = self._project_id(conn, project)
            counted: Sequence[Row[str, int]] = conn.execute(
                select(label_t.c.source, func.count()).where(label_t.c.project_id == pid).group_by(label_t.c.source)
            ).all()
        counts = dict.fromkeys(LABEL_SOURCES, 0)
        counts.update({source: n for source, n in counted})
        return counts
