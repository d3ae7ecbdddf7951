"""Label Studio annotations as labelagent keeps them (every one, skipped ones too), the one order of "latest"
annotation, and Label Studio's JSON-MIN export read back as tasks.

JSON-MIN (``label_studio_converter``'s ``convert_to_json_min``) writes one flat record per annotation that is not
skipped, newest first: the task's data keys, ``id``, the control's answer under the control's name (one choice: the
label; several: ``{"choices": [...]}``), ``annotator``, ``annotation_id``, ``created_at``, ``updated_at``,
``lead_time``; a task without annotations gives one record without them. Records of one task id are joined again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from policies import InputError
from service.api.labelstudio import MIN_FIELDS, LSAnnotation, LSMinRecord, LSTask, annotation_label


@dataclass(frozen=True, slots=True)
class AnnotationRecord:
    """An annotation as labelagent keeps it (``label`` None: skipped)."""

    annotation_id: int | None
    label: str | None
    was_cancelled: bool
    ground_truth: bool
    result: list[dict[str, Any]]
    completed_by: Any
    lead_time: float | None
    created_at: datetime | None
    updated_at: datetime | None


def annotation_record(
    annotation: LSAnnotation, *, from_name: str | None, labels: Sequence[str], place: str
) -> AnnotationRecord:
    """The annotation as kept: its label checked against ``labels`` (None when skipped)."""
    return AnnotationRecord(
        annotation_id=annotation.id,
        label=annotation_label(annotation, from_name=from_name, labels=labels, place=place),
        was_cancelled=bool(annotation.was_cancelled),
        ground_truth=bool(annotation.ground_truth),
        result=list(annotation.result),
        completed_by=annotation.completed_by,
        lead_time=annotation.lead_time,
        created_at=annotation.created_at,
        updated_at=annotation.updated_at,
    )


def latest_order(created_at: datetime, annotation_id: int | None, row: int) -> tuple[datetime, int, int]:
    """The one order of "latest" (import, webhooks, deletes): creation time, then Label Studio's annotation id,
    then arrival. The item's ground truth is the label of its latest annotation that is not skipped."""
    return (created_at, annotation_id if annotation_id is not None else -1, row)


def _min_control(record: dict[str, Any], *, text_key: str, from_name: str | None, labels: Sequence[str],
                 place: str) -> str | None:
    """The key of a JSON-MIN record holding the answer: ``from_name``, else the one key whose value is a label of
    the project (or ``{"choices": [...]}``)."""
    if from_name is not None:
        return from_name if from_name in record else None
    found = [
        k for k, v in record.items()
        if k not in MIN_FIELDS and k != text_key
        and ((isinstance(v, str) and v in labels) or (isinstance(v, dict) and "choices" in v))
    ]
    if len(found) > 1:
        raise InputError(f"{place}: keys {found} all look like answers; pass from_name=<the Choices control's name>")
    return found[0] if found else None


def min_tasks(
    records: Sequence[LSMinRecord], *, text_key: str, from_name: str | None, labels: Sequence[str], first: int = 0
) -> list[LSTask]:
    """JSON-MIN records as tasks: one per task id (in first-seen order), its records' answers as annotations."""
    tasks: dict[int, LSTask] = {}
    for n, rec in enumerate(records):
        place = f"tasks[{first + n}]" if rec.id is None else f"task {rec.id}"
        if rec.id is None:
            raise InputError(f"{place} has no id; labelagent keys items by the Label Studio task id")
        extra = dict(rec.model_extra or {})
        control = _min_control(extra, text_key=text_key, from_name=from_name, labels=labels, place=place)
        answer = extra.pop(control) if control is not None else None
        data = {k: v for k, v in extra.items() if k not in MIN_FIELDS}
        task = tasks.setdefault(rec.id, LSTask(id=rec.id, data=data))
        if task.data != data:
            raise InputError(f"{place}: its JSON-MIN records disagree on the task's data; export the project again")
        if answer is None:
            if rec.annotation_id is not None:
                raise InputError(f"{place}: annotation {rec.annotation_id} has no answer "
                                 f"{'under ' + repr(from_name) if from_name else 'that is a project label'}")
            continue
        choices = answer.get("choices") if isinstance(answer, dict) else [answer]
        result = {"type": "choices", "from_name": control, "to_name": text_key, "value": {"choices": choices}}
        task.annotations.append(LSAnnotation(
            id=rec.annotation_id, result=[result], created_at=rec.created_at, updated_at=rec.updated_at,
            lead_time=rec.lead_time, completed_by=rec.annotator))
    return list(tasks.values())
