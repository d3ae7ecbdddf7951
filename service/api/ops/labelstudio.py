"""The Label Studio bridge: import a Label Studio export (JSON, snapshot or JSON-MIN), export labels as Label
Studio tasks, and Label Studio's webhooks. The ML backend routes are :mod:`service.api.ops.labelstudio_backend`.

Every annotation is kept as it came (``ls_annotation``: skipped ones, several per task, who and when) and exported
again; labelagent's ground truth stays one ``human`` label per item: the label of the item's latest annotation that
is not skipped, the same rule for import, create, update and delete (:mod:`service.store.ls_annotations`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from policies import InputError, NotFoundError
from service.api.labelstudio import (
    META_KEY,
    PREDICTIONS_KEY,
    Config,
    ImportResponse,
    LSAnnotationOut,
    LSMinRecord,
    LSTask,
    LSTaskOut,
    WebhookRequest,
    WebhookResponse,
    annotation_id_of,
    annotation_reason,
    check_predictions,
    choices_result,
    item_data,
    parse_label_config,
    prediction,
    task_id_of,
    task_item,
    task_key,
    where,
)
from service.api.labelstudio_records import AnnotationRecord, annotation_record, min_tasks
from service.api.ops import tell
from service.api.ops.labelstudio_backend import DEFAULT_TEXT_KEY, Predictors
from service.runtime.feedback import FeedbackSink
from service.store import SqlStore
from service.store.labelstudio import StoredItem, items_page, remove_human_labels, stored_items
from service.store.ls_annotations import (
    StoredAnnotation,
    annotations_of,
    delete_annotations,
    record_annotations,
    sync_ground_truth,
)
from tools.base import Item

# --- import and export ----------------------------------------------------------------------------------


def as_tasks(
    records: Sequence[LSTask | LSMinRecord], *, store: SqlStore, project: str, text_key: str, from_name: str | None
) -> list[LSTask]:
    """An export's records as tasks: tasks as they are, runs of JSON-MIN records joined per task id."""
    labels = store.projects.active_policy(project).labels
    tasks: list[LSTask] = []
    run: list[LSMinRecord] = []
    for n, record in enumerate([*records, None]):
        if isinstance(record, LSMinRecord):
            run.append(record)
            continue
        if run:
            tasks.extend(min_tasks(run, text_key=text_key, from_name=from_name, labels=labels, first=n - len(run)))
            run = []
        if record is not None:
            tasks.append(record)
    return tasks


def import_tasks(
    *,
    store: SqlStore,
    feedback: FeedbackSink,
    project: str,
    tasks: Sequence[LSTask],
    text_key: str,
    from_name: str | None,
) -> ImportResponse:
    """Store each task as item ``ls-<id>`` (idempotent), keep its annotations, and make the label of its latest
    annotation that is not skipped its ground truth. Everything is checked before anything is stored: a label
    outside the project's labels is an InputError naming the task and the label."""
    policy = store.projects.active_policy(project)
    seen: set[int] = set()
    items: list[Item] = []
    kept: dict[str, list[AnnotationRecord]] = {}
    client: list[str | None] = []
    for i, task in enumerate(tasks):
        place = where(task, i)
        if task.id is None:
            raise InputError(
                f"tasks[{i}] has no id; labelagent keys items by the Label Studio task id "
                "(export the tasks from Label Studio with their ids)"
            )
        if task.id in seen:
            raise InputError(f"task {task.id} appears twice; send each task once")
        seen.add(task.id)
        key = task_key(task.id)
        check_predictions(task, from_name=from_name, labels=policy.labels, place=place)
        records = [
            annotation_record(a, from_name=from_name, labels=policy.labels, place=f"{place} annotations[{n}]")
            for n, a in enumerate(task.annotations)
        ]
        items.append(task_item(task, text_key=text_key, key=key, max_text_chars=store.settings.max_text_chars))
        labeled = [r for r in records if r.label is not None]
        client.append(labeled[-1].label if labeled else None)
        if records:
            kept[key] = records
    inserted, duplicates = _ingest(store, project, items, client)
    record_annotations(store, project, kept)
    written, unchanged, _ = sync_ground_truth(store, project, list(kept))
    if inserted or written:
        tell(feedback, project)
    return ImportResponse(inserted=inserted, duplicates=duplicates, ground_truth=written, unchanged=unchanged)


def _ingest(store: SqlStore, project: str, items: list[Item], client: list[str | None]) -> tuple[list[str], list[str]]:
    inserted: list[str] = []
    duplicates: list[str] = []
    size = store.settings.max_batch_items
    for start in range(0, len(items), size):
        part, labels = items[start : start + size], client[start : start + size]
        result = store.items.ingest(project, part, labels=labels if any(lab is not None for lab in labels) else None)
        dup = set(result.duplicates)
        duplicates.extend(it.key for it in part if it.key in dup)
        inserted.extend(it.key for it in part if it.key not in dup)
    return inserted, duplicates


def _annotation_out(a: StoredAnnotation) -> LSAnnotationOut:
    return LSAnnotationOut(id=a.annotation_id, result=a.result, was_cancelled=a.was_cancelled,
                           ground_truth=a.ground_truth, created_at=a.created_at, updated_at=a.updated_at,
                           completed_by=a.completed_by, lead_time=a.lead_time)


def _annotations(it: StoredItem, kept: list[StoredAnnotation], from_name: str, to_name: str) -> list[LSAnnotationOut]:
    """Every kept annotation, and the item's human label when no kept annotation gave it (a labelagent review)."""
    out = [_annotation_out(a) for a in kept]
    human = it.human
    if human is not None and not any(annotation_reason(a.annotation_id, task_id_of(it.key)) == human.reason
                                     for a in kept):
        out.append(LSAnnotationOut(
            id=annotation_id_of(human.reason), created_at=human.created_at,
            result=[choices_result(human.label, from_name=from_name, to_name=to_name).model_dump()]))
    return out


def export_tasks(
    *, store: SqlStore, project: str, text_key: str, from_name: str, to_name: str, after: int, limit: int
) -> tuple[list[LSTaskOut], int, bool]:
    """One page of items (arrival order after ``after``) as Label Studio tasks: every kept annotation (and a human
    label given in labelagent), the imported predictions and then the agent's latest label as a prediction
    (``score`` = confidence, ``model_version`` = the policy key that labeled), the task's meta. Returns (tasks,
    cursor of the next page, more to come)."""
    page = items_page(store, project, after_seq=after, limit=limit + 1)
    more = len(page) > limit
    page = page[:limit]
    kept = annotations_of(store, project, [it.key for it in page])
    out: list[LSTaskOut] = []
    for it in page:
        stored = it.meta.get(PREDICTIONS_KEY)
        predictions: list[dict[str, Any]] = (
            [p for p in stored if isinstance(p, dict)] if isinstance(stored, list) else []
        )
        if it.agent is not None:
            score = it.agent.confidence if it.agent.confidence is not None else 0.0
            predictions.append(
                prediction(
                    it.agent.label,
                    score,
                    model_version=f"{project}/{it.agent.policy_version}",
                    from_name=from_name,
                    to_name=to_name,
                ).model_dump(mode="json")
            )
        meta = it.meta.get(META_KEY)
        out.append(
            LSTaskOut(
                id=task_id_of(it.key),
                data=item_data(it.text, it.meta, text_key=text_key),
                annotations=_annotations(it, kept.get(it.key, []), from_name, to_name),
                predictions=predictions,
                meta={**(meta if isinstance(meta, dict) else {}), "external_id": it.key},
            )
        )
    return out, (page[-1].seq if page else after), more


# --- webhooks -------------------------------------------------------------------------------------------

ANNOTATION_WRITES = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED")
ANNOTATION_DELETES = ("ANNOTATION_DELETED", "ANNOTATIONS_DELETED")
TASK_CREATES = ("TASK_CREATED", "TASKS_CREATED")


def webhook(
    *, store: SqlStore, feedback: FeedbackSink, predictors: Predictors, project: str, body: WebhookRequest
) -> WebhookResponse:
    """Annotation created or updated: kept, and the item's ground truth follows the rule (module doc). Annotation
    deleted: forgotten, and the ground truth follows the rule again (the previous annotation's label, or none:
    the item goes back to review or to the agent). Tasks created: imported. ``START_TRAINING``: the workers are
    woken to learn from new ground truth and ``/predict``'s labeler is rebuilt. Other actions are acknowledged."""
    store.projects.active_policy(project)  # an unknown project is a 404 for every action
    action = body.action.upper()
    label_config = body.project.get("label_config") if isinstance(body.project, dict) else None
    config = parse_label_config(label_config if isinstance(label_config, str) else None)
    if action in ANNOTATION_WRITES:
        return _annotation_written(store, feedback, project, body, action, config)
    if action in ANNOTATION_DELETES:
        return _annotations_deleted(store, feedback, project, body, action)
    if action in TASK_CREATES:
        tasks = list(body.tasks or ([body.task] if body.task is not None else []))
        if not tasks:
            raise InputError(f"{action} needs 'tasks': a list of tasks with id and data")
        done = import_tasks(store=store, feedback=feedback, project=project, tasks=tasks,
                            text_key=config.text_key or DEFAULT_TEXT_KEY, from_name=config.from_name)
        return WebhookResponse(
            action=action,
            applied=bool(done.inserted or done.ground_truth),
            message=f"{len(done.inserted)} task(s) imported, {len(done.duplicates)} known already",
            external_ids=done.inserted + done.duplicates,
        )
    if action == "START_TRAINING":
        predictors.drop(project)
        tell(feedback, project)
        return WebhookResponse(
            action=action,
            applied=True,
            message="the workers were woken to learn from new "
            "ground truth (they also retrain as answers arrive); /predict reloads its model",
        )
    return WebhookResponse(action=action, applied=False, message=f"{action} is not used by labelagent; acknowledged")


def _annotations_deleted(
    store: SqlStore, feedback: FeedbackSink, project: str, body: WebhookRequest, action: str
) -> WebhookResponse:
    raw = [a.get("id") for a in body.annotations or []]
    raw += [x for x in ((body.annotation.id if body.annotation else None), body.id) if x is not None]
    if not raw or not all(isinstance(x, int) and not isinstance(x, bool) for x in raw):
        raise InputError(f"{action} needs the deleted annotations' ids: 'annotations': [{{'id': <int>}}]")
    ids = [x for x in raw if isinstance(x, int)]
    keys = delete_annotations(store, project, ids)
    written, _, removed = sync_ground_truth(store, project, keys)
    # annotations labelagent never kept (sent before it kept them): remove the ground truth they set
    removed += remove_human_labels(store, project, [annotation_reason(x, None) for x in ids])
    touched = list(dict.fromkeys(written + removed))
    if touched:
        tell(feedback, project)
    message = (
        f"ground truth of {len(touched)} item(s) changed: {len(written)} take an earlier annotation's label, "
        f"{len(removed)} have none left and go back to review or to the agent"
        if touched else "no ground truth came from these annotations"
    )
    return WebhookResponse(action=action, applied=bool(touched), message=message, external_ids=touched)


def _annotation_written(
    store: SqlStore, feedback: FeedbackSink, project: str, body: WebhookRequest, action: str, config: Config
) -> WebhookResponse:
    annotation = body.annotation
    if annotation is None:
        raise InputError(f"{action} needs 'annotation' (with id, task and result)")
    task = body.task
    task_id = annotation.task if isinstance(annotation.task, int) else None
    if task_id is None and isinstance(annotation.task, dict) and isinstance(annotation.task.get("id"), int):
        task_id = annotation.task["id"]
    if task_id is None and task is not None:
        task_id = task.id
    if task_id is None or annotation.id is None:
        raise InputError(f"{action} needs annotation.id and annotation.task (the task id)")
    place = f"task {task_id} annotation {annotation.id}"
    policy = store.projects.active_policy(project)
    record = annotation_record(annotation, from_name=config.from_name, labels=policy.labels, place=place)
    key = task_key(task_id)
    if task is not None and task.id == task_id and not stored_items(store, project, [key]):
        import_tasks(store=store, feedback=feedback, project=project,
                     tasks=[task.model_copy(update={"annotations": [], "predictions": []})],
                     text_key=config.text_key or DEFAULT_TEXT_KEY, from_name=config.from_name)
    if not stored_items(store, project, [key]):
        raise NotFoundError(f"item {key!r} does not exist in this project; import its task first")
    record_annotations(store, project, {key: [record]})
    written, _, removed = sync_ground_truth(store, project, [key])
    if written or removed:
        tell(feedback, project)
    item = stored_items(store, project, [key])[key].human
    now = f"labeled {item.label!r} by a human" if item is not None else "without a human label"
    what = "was skipped (was_cancelled)" if record.label is None else f"chose {record.label!r}"
    return WebhookResponse(action=action, applied=bool(written or removed), external_ids=[key],
                           message=f"{place} {what}: {key} is {now} (its latest annotation that is not skipped)")
