"""The Label Studio bridge: import a Label Studio export, export labels as Label Studio tasks, and act as a Label
Studio ML backend (``/predict``, ``/setup``, ``/health``, ``/webhook``) for one project.

``/predict`` answers with what labelagent knows now: the item's stored label (human or agent) when the task was
imported before, else the agent's decision on the task's data, computed by a private
:class:`~agent.runner.BatchLabeler` of the active policy version (the worker runtime's code path, with its learner
restored from the store's ground truth and calibration records) and never stored. One graph run labels the whole
batch. The labeler is cached per project and rebuilt when the policy version changes, or when ground truth changed
and it is older than :data:`REFRESH_SECONDS` (or ``START_TRAINING`` drops it).
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from agent.runner import BatchLabeler
from policies import InputError, Policy
from service.deps import ToolFactory
from service.feedback import FeedbackSink
from service.labelstudio import (
    PREDICTIONS_KEY,
    Config,
    ImportResponse,
    LSAnnotationOut,
    LSTask,
    LSTaskOut,
    PredictRequest,
    PredictResponse,
    SetupResponse,
    WebhookRequest,
    WebhookResponse,
    annotation_id_of,
    annotation_label,
    annotation_reason,
    check_predictions,
    choices_result,
    item_data,
    latest_label,
    parse_label_config,
    prediction,
    task_id_of,
    task_item,
    task_key,
    where,
)
from service.ops import tell
from service.store import SqlStore
from service.store.labelstudio import (
    HumanAnswer,
    human_label_mark,
    items_page,
    put_human_labels,
    remove_human_labels,
    stored_items,
)
from tools.base import Item

REFRESH_SECONDS = 300.0  # a rebuild retrains the learner on all ground truth: not on every new answer
DEFAULT_FROM_NAME = "label"
DEFAULT_TO_NAME = "text"
DEFAULT_TEXT_KEY = "text"
MODEL_CLASS = "labelagent"


# --- import and export ----------------------------------------------------------------------------------


def import_tasks(
    *,
    store: SqlStore,
    feedback: FeedbackSink,
    project: str,
    tasks: Sequence[LSTask],
    text_key: str,
    from_name: str | None,
) -> ImportResponse:
    """Store each task as item ``ls-<id>`` (idempotent) and its last annotation that is not skipped as ground
    truth. Everything is checked before anything is stored: a label outside the project's labels is an InputError
    naming the task and the label."""
    policy = store.active_policy(project)
    seen: set[int] = set()
    items: list[Item] = []
    answers: list[HumanAnswer] = []
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
        found = latest_label(task, from_name=from_name, labels=policy.labels, place=place)
        items.append(task_item(task, text_key=text_key, key=key, max_text_chars=store.settings.max_text_chars))
        client.append(found[0] if found else None)
        if found is not None:
            answers.append(HumanAnswer(key, found[0], annotation_reason(found[1], task.id)))
    inserted, duplicates = _ingest(store, project, items, client)
    written, unchanged = put_human_labels(store, project, answers)
    if inserted or written:
        tell(feedback, project)
    return ImportResponse(inserted=inserted, duplicates=duplicates, ground_truth=written, unchanged=unchanged)


def _ingest(store: SqlStore, project: str, items: list[Item], client: list[str | None]) -> tuple[list[str], list[str]]:
    inserted: list[str] = []
    duplicates: list[str] = []
    size = store.settings.max_batch_items
    for start in range(0, len(items), size):
        part, labels = items[start : start + size], client[start : start + size]
        result = store.ingest(project, part, labels=labels if any(lab is not None for lab in labels) else None)
        dup = set(result.duplicates)
        duplicates.extend(it.key for it in part if it.key in dup)
        inserted.extend(it.key for it in part if it.key not in dup)
    return inserted, duplicates


def export_tasks(
    *, store: SqlStore, project: str, text_key: str, from_name: str, to_name: str, after: int, limit: int
) -> tuple[list[LSTaskOut], int, bool]:
    """One page of items (arrival order after ``after``) as Label Studio tasks: the latest human label as an
    annotation, the imported predictions and then the agent's latest label as predictions (``score`` = confidence,
    ``model_version`` = the policy key that labeled). Returns (tasks, cursor of the next page, more to come)."""
    page = items_page(store, project, after_seq=after, limit=limit + 1)
    more = len(page) > limit
    page = page[:limit]
    out: list[LSTaskOut] = []
    for it in page:
        annotations: list[LSAnnotationOut] = []
        if it.human is not None:
            annotations.append(
                LSAnnotationOut(
                    id=annotation_id_of(it.human.reason),
                    created_at=it.human.created_at,
                    result=[choices_result(it.human.label, from_name=from_name, to_name=to_name)],
                )
            )
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
        out.append(
            LSTaskOut(
                id=task_id_of(it.key),
                data=item_data(it.text, it.meta, text_key=text_key),
                annotations=annotations,
                predictions=predictions,
                meta={"external_id": it.key},
            )
        )
    return out, (page[-1].seq if page else after), more


# --- the ML backend -------------------------------------------------------------------------------------


@dataclass(slots=True)
class Predictor:
    labeler: BatchLabeler
    version: int
    mark: tuple[int, int]
    built: float
    lock: threading.Lock = field(default_factory=threading.Lock)

    def run(self, items: list[Item]) -> dict[str, tuple[str | None, float]]:
        """key -> (label, confidence) of the agent's decisions on ``items`` (one graph run; nothing stored)."""
        with self.lock:  # the labeler's random state and learner are not thread-safe
            result = asyncio.run(self.labeler.run_batch(items))
        return {d.key: (d.label, float(d.confidence)) for d in result.decisions}


class Predictors:
    """The cached labelers of ``/predict``, one per project (kept on ``app.state``)."""

    def __init__(self, refresh_seconds: float = REFRESH_SECONDS) -> None:
        self.refresh = refresh_seconds
        self._lock = threading.Lock()
        self._by_project: dict[str, Predictor] = {}
        self.builds = 0

    def drop(self, project: str) -> None:
        with self._lock:
            self._by_project.pop(project, None)

    def get(self, store: SqlStore, project: str, policy: Policy, tool_factory: ToolFactory) -> Predictor:
        mark = human_label_mark(store, project)
        with self._lock:  # builds are rare; one at a time keeps two requests from training twice
            current = self._by_project.get(project)
            if (
                current is not None
                and current.version == policy.version
                and (current.mark == mark or time.monotonic() - current.built < self.refresh)
            ):
                return current
            labeler = BatchLabeler(policy, tool_factory(policy))
            truth = store.load_ground_truth(project)
            calibration = store.load_calibration(project, policy.calibration_window)
            labeler.learner.load(truth, calibration)
            current = Predictor(labeler, policy.version, mark, time.monotonic())
            self._by_project[project] = current
            self.builds += 1
            return current


def _names(config: Config) -> tuple[str, str, str]:
    return (
        config.from_name or DEFAULT_FROM_NAME,
        config.to_name or DEFAULT_TO_NAME,
        config.text_key or DEFAULT_TEXT_KEY,
    )


def predict(
    *, store: SqlStore, predictors: Predictors, tool_factory: ToolFactory, project: str, body: PredictRequest
) -> PredictResponse:
    """One prediction per task, in order, in the labeling config's ``Choices`` control; ``model_version`` is the
    active policy key. A task whose item exists with the same data and has a label gets that label (human labels
    score 1); the rest go through the agent."""
    policy = store.active_policy(project)
    from_name, to_name, text_key = _names(parse_label_config(body.label_config))
    version = policy.key
    keys = [task_key(t.id) if t.id is not None else None for t in body.tasks]
    known = stored_items(store, project, [k for k in keys if k is not None])
    answers: dict[int, tuple[str | None, float]] = {}
    todo: dict[str, tuple[int, Item]] = {}
    for i, (task, key) in enumerate(zip(body.tasks, keys, strict=True)):
        stored = known.get(key) if key is not None else None
        # the stored label only for the same task: a client other than Label Studio may number its tasks 0, 1, ...
        same = stored is not None and item_data(stored.text, stored.meta, text_key=text_key) == task.data
        label = stored.latest if stored is not None and same else None
        if label is not None:
            answers[i] = (label.label, label.confidence if label.confidence is not None else 1.0)
            continue
        name = key if key is not None and key not in todo else f"predict-{i}"
        todo[name] = (i, task_item(task, text_key=text_key, key=name, max_text_chars=store.settings.max_text_chars))
    if todo:
        decided = predictors.get(store, project, policy, tool_factory).run([it for _, it in todo.values()])
        for name, (i, _) in todo.items():
            answers[i] = decided.get(name, (None, 0.0))
    results = [
        prediction(answers[i][0], answers[i][1], model_version=version, from_name=from_name, to_name=to_name)
        for i in range(len(body.tasks))
    ]
    return PredictResponse(results=results, model_version=version)


def setup(*, store: SqlStore, project: str, label_config: str | None) -> SetupResponse:
    """The model version (the active policy key), after checking that the labeling config's ``Choices`` offer every
    label of the project (else Label Studio could not show the agent's labels)."""
    policy = store.active_policy(project)
    config = parse_label_config(label_config)
    if label_config and label_config.strip() and config.from_name is None:
        raise InputError(
            "the labeling config has no <Choices> control; labelagent labels with one Choices control "
            f"offering the project's labels {policy.labels}"
        )
    missing = [lab for lab in policy.labels if config.choices and lab not in config.choices]
    if missing:
        raise InputError(
            f"the labeling config's <Choices name={config.from_name!r}> lacks the project's labels "
            f"{missing}; add a <Choice value=...> for each of {policy.labels}"
        )
    return SetupResponse(model_version=policy.key)


# --- webhooks -------------------------------------------------------------------------------------------

ANNOTATION_WRITES = ("ANNOTATION_CREATED", "ANNOTATION_UPDATED")
ANNOTATION_DELETES = ("ANNOTATION_DELETED", "ANNOTATIONS_DELETED")
TASK_CREATES = ("TASK_CREATED", "TASKS_CREATED")


def webhook(
    *, store: SqlStore, feedback: FeedbackSink, predictors: Predictors, project: str, body: WebhookRequest
) -> WebhookResponse:
    """Annotation created or updated: its label becomes the item's ground truth (a skipped annotation removes what
    it had set). Annotation deleted: its ground truth is removed. Tasks created: imported. ``START_TRAINING``: the
    workers are woken to learn from new ground truth and ``/predict``'s labeler is rebuilt. Other actions are
    acknowledged and ignored."""
    action = body.action.upper()
    label_config = body.project.get("label_config") if isinstance(body.project, dict) else None
    config = parse_label_config(label_config if isinstance(label_config, str) else None)
    if action in ANNOTATION_WRITES:
        return _annotation_written(store, feedback, project, body, action, config)
    if action in ANNOTATION_DELETES:
        ids = [a.get("id") for a in body.annotations or []]
        ids += [x for x in ((body.annotation.id if body.annotation else None), body.id) if x is not None]
        if not ids or not all(isinstance(x, int) and not isinstance(x, bool) for x in ids):
            raise InputError(f"{action} needs the deleted annotations' ids: 'annotations': [{{'id': <int>}}]")
        touched = remove_human_labels(store, project, [annotation_reason(int(x or 0), None) for x in ids])
        if touched:
            tell(feedback, project)
        message = (
            (
                f"ground truth of {len(touched)} item(s) removed; items left without a label go back to review "
                "or to the agent"
            )
            if touched
            else "no ground truth came from these annotations"
        )
        return WebhookResponse(action=action, applied=bool(touched), message=message, external_ids=touched)
    if action in TASK_CREATES:
        tasks = list(body.tasks or ([body.task] if body.task is not None else []))
        if not tasks:
            raise InputError(f"{action} needs 'tasks': a list of tasks with id and data")
        done = import_tasks(
            store=store,
            feedback=feedback,
            project=project,
            tasks=tasks,
            text_key=config.text_key or DEFAULT_TEXT_KEY,
            from_name=config.from_name,
        )
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
    policy = store.active_policy(project)
    label = annotation_label(annotation, from_name=config.from_name, labels=policy.labels, place=place)
    key = task_key(task_id)
    reason = annotation_reason(annotation.id, task_id)
    if label is None:  # skipped: no ground truth, and none left from an earlier version of this annotation
        touched = remove_human_labels(store, project, [reason])
        if touched:
            tell(feedback, project)
        return WebhookResponse(
            action=action,
            applied=bool(touched),
            external_ids=touched,
            message=f"{place} was skipped (was_cancelled): no ground truth",
        )
    if task is not None and task.id == task_id and not stored_items(store, project, [key]):
        import_tasks(
            store=store,
            feedback=feedback,
            project=project,
            tasks=[task.model_copy(update={"annotations": [], "predictions": []})],
            text_key=config.text_key or DEFAULT_TEXT_KEY,
            from_name=config.from_name,
        )
    written, _ = put_human_labels(store, project, [HumanAnswer(key, label, reason)])
    if written:
        tell(feedback, project)
    verb = "is now" if written else "already was"
    return WebhookResponse(
        action=action,
        applied=bool(written),
        external_ids=[key],
        message=f"{key} {verb} labeled {label!r} by a human ({place})",
    )
