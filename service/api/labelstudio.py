"""Label Studio's JSON shapes (pydantic models) and pure conversions between them and labelagent's items and labels.

Label Studio shapes are foreign formats that differ between Label Studio versions and carry many fields labelagent
does not use (``created_at``, ``project``, ``lead_time``, ...), so their models ignore unknown fields instead of
rejecting them; every field labelagent reads is validated. The shapes follow Label Studio's documentation: the task
export format (``docs/source/guide/export.md``), the ML backend protocol (``label_studio_ml/api.py`` of
HumanSignal/label-studio-ml-backend and ``label_studio/ml/api_connector.py`` of HumanSignal/label-studio) and the
webhook payloads (``docs/source/guide/webhook_reference.md``).

Mapping: task ``id`` N is the item with external id ``ls-N``; ``data[text_key]`` is the item's text and every other
data key (an ``image`` URL, ...) is kept in its metadata, so an export gives the same ``data`` back. Only
classification with one ``Choices`` control is mapped: a result ``{"from_name", "to_name", "type": "choices",
"value": {"choices": [label]}}``. Imported predictions are kept verbatim in the item's metadata under
:data:`PREDICTIONS_KEY` (the store records votes only from the agent's own runs) and exported again unchanged.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Discriminator, Field, RootModel, Tag

from policies import InputError
from service.api.schemas.common import JsonObject, json_safe
from tools.base import Item

KEY_PREFIX = "ls-"
PREDICTIONS_KEY = "label_studio_predictions"
META_KEY = "label_studio_meta"  # the task's meta, kept in the item's metadata
ANNOTATION_REASON = "label studio annotation "  # + the annotation id: how a human label remembers its annotation
MAX_LABEL_CONFIG_CHARS = 200_000
TaskId = Annotated[int, Field(ge=0, le=2**63 - 1)]
DataObject = Annotated[dict[str, Any], AfterValidator(json_safe)]


class Foreign(BaseModel):
    """Base of Label Studio's shapes: fields labelagent does not read are ignored (Label Studio sends many)."""

    model_config = ConfigDict(extra="ignore")


class LSAnnotation(Foreign):
    """An annotation (a human's answer) as in a task export or a webhook. ``completed_by`` is a user id, or a user
    object in some exports; both are kept as sent."""

    id: TaskId | None = Field(default=None, description="The annotation's id in Label Studio.")
    result: list[JsonObject] = Field(
        default_factory=list, description="Regions and choices; labelagent reads the `choices` result."
    )
    was_cancelled: bool | None = Field(default=False, description="A skipped task: no label.")
    ground_truth: bool | None = Field(default=False, description="Label Studio's ground-truth star (kept).")
    created_at: datetime | None = Field(default=None, description="When it was made (kept; the latest one counts).")
    updated_at: datetime | None = None
    completed_by: TaskId | JsonObject | Annotated[str, Field(max_length=256)] | None = None
    lead_time: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None
    task: TaskId | dict[str, Any] | None = Field(default=None, description="The task's id (webhooks).")


class LSTask(Foreign):
    """A task: Label Studio's import and export format (``drafts`` and the other fields Label Studio adds are
    ignored)."""

    id: TaskId | None = Field(default=None, description="The task's id; the item is `ls-<id>`.")
    data: DataObject = Field(description="The task's data: the text under the text key, anything else is kept.")
    annotations: list[LSAnnotation] = Field(default_factory=list)
    predictions: list[JsonObject | TaskId] = Field(
        default_factory=list,
        description="Kept verbatim in the item's metadata; prediction ids (Label Studio's JSON export writes them "
        "instead of the predictions) refer to Label Studio's own rows and are not kept.",
    )
    meta: JsonObject | None = Field(default=None, description="The task's meta: kept and exported again.")


class LSMinRecord(Foreign):
    """One record of Label Studio's JSON-MIN export: the task's data keys at the top level, the control's answer
    under its name (``"label": "spam"``), and the annotation's id, annotator and times (one record per annotation
    that is not skipped)."""

    model_config = ConfigDict(extra="allow")
    id: TaskId | None = None
    annotation_id: TaskId | None = None
    annotator: TaskId | Annotated[str, Field(max_length=256)] | None = None
    created_at: datetime | None = None
    updated_at: datetime | None = None
    lead_time: Annotated[float, Field(ge=0, allow_inf_nan=False)] | None = None


MIN_FIELDS = frozenset({"id", "annotation_id", "annotator", "created_at", "updated_at", "lead_time", "agreement"})


def _shape(value: Any) -> str:
    return "task" if isinstance(value, dict) and "data" in value else "min"


ImportRecord = Annotated[
    Annotated[LSTask, Tag("task")] | Annotated[LSMinRecord, Tag("min")], Discriminator(_shape)
]


class LSTasks(RootModel[Annotated[list[ImportRecord], Field(min_length=1)]]):
    """A Label Studio export: a list of tasks (JSON export, snapshot export) or of JSON-MIN records (at least one)."""


class ChoicesValue(BaseModel):
    choices: list[str]


class ChoicesResult(BaseModel):
    """One classification result in Label Studio's `choices` format."""

    from_name: str
    to_name: str
    type: Literal["choices"] = "choices"
    value: ChoicesValue


class LSPrediction(BaseModel):
    """A prediction: the result, its score (the agent's confidence) and the model version (the policy version)."""

    result: list[ChoicesResult]
    score: float
    model_version: str


class LSAnnotationOut(BaseModel):
    id: int | None = Field(description="The Label Studio annotation id when the label came from Label Studio.")
    result: list[dict[str, Any]] = Field(description="As Label Studio sent it; a `choices` result for labelagent's.")
    was_cancelled: bool = False
    ground_truth: bool = False
    created_at: datetime
    updated_at: datetime | None = None
    completed_by: Any = Field(default=None, description="As Label Studio sent it (a user id or object).")
    lead_time: float | None = None


class LSTaskOut(BaseModel):
    """An exported task: ready to import into Label Studio."""

    id: int | None = Field(description="The Label Studio task id (items that did not come from Label Studio: None).")
    data: dict[str, Any]
    annotations: list[LSAnnotationOut]
    predictions: list[dict[str, Any]] = Field(description="Imported predictions, then the agent's label.")
    meta: dict[str, Any] = Field(description="The imported task's meta, and `external_id`: the labelagent item.")


class PredictRequest(Foreign):
    """Label Studio's request to an ML backend's `/predict`."""

    tasks: list[LSTask] = Field(max_length=10_000)
    label_config: str | None = Field(default=None, max_length=MAX_LABEL_CONFIG_CHARS)
    project: str | int | None = None
    params: dict[str, Any] | None = None
    model_version: str | None = None


class PredictResponse(BaseModel):
    results: list[LSPrediction] = Field(description="One prediction per task, in order.")
    model_version: str


class SetupRequest(Foreign):
    """Label Studio's request to an ML backend's `/setup` (`schema` is the labeling config)."""

    project: str | int | None = None
    label_config: str | None = Field(default=None, alias="schema", max_length=MAX_LABEL_CONFIG_CHARS)
    hostname: str | None = None


class SetupResponse(BaseModel):
    model_version: str


class VersionsResponse(BaseModel):
    versions: list[str] = Field(description="The model versions /predict can answer with: the current one.")


class HealthResponse(BaseModel):
    status: Literal["UP"] = "UP"
    model_class: str
    model_version: str


class WebhookRequest(Foreign):
    """A Label Studio webhook (or the ML backend's `START_TRAINING` call)."""

    action: str = Field(min_length=1, max_length=64)
    annotation: LSAnnotation | None = None
    annotations: list[dict[str, Any]] | None = None
    id: TaskId | None = None
    task: LSTask | None = None
    tasks: list[LSTask] | None = None
    project: dict[str, Any] | str | int | None = None


class TrainRequest(Foreign):
    """Label Studio's ``/train`` call (its Start Training without the START_TRAINING webhook flag): the annotated
    tasks, which labelagent has from the annotation webhooks already (not read)."""

    annotations: list[dict[str, Any]] = Field(default_factory=list)
    project: str | int | None = None


class WebhookResponse(BaseModel):
    action: str
    applied: bool = Field(description="Whether labelagent changed anything.")
    message: str
    external_ids: list[str] = Field(default_factory=list, description="Items touched.")


class ImportResponse(BaseModel):
    inserted: list[str] = Field(description="Items stored by this call (external ids).")
    duplicates: list[str] = Field(description="Items stored before (their data is left as it was).")
    ground_truth: list[str] = Field(description="Items whose human label was written or replaced.")
    unchanged: list[str] = Field(description="Items whose human label was already this annotation's.")


# --- labeling config ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Config:
    """What labelagent needs of a labeling config: the Choices control, its object tag and the data key."""

    from_name: str | None = None
    to_name: str | None = None
    text_key: str | None = None
    choices: tuple[str, ...] = ()


def parse_label_config(xml: str | None) -> Config:
    """The first ``<Choices name=... toName=...>`` and the data key of the object tag it labels (``$text`` ->
    ``text``). An empty config gives an empty :class:`Config`; a config that is not XML is an InputError."""
    if not xml or not xml.strip():
        return Config()
    try:
        root = ET.fromstring(xml)
    except ET.ParseError as exc:
        raise InputError(f"label_config is not valid XML ({exc}); send the project's labeling config") from None
    choices = next((el for el in root.iter() if el.tag == "Choices"), None)
    if choices is None:
        return Config()
    to_name = choices.get("toName")
    text_key = None
    for el in root.iter():
        value = el.get("value", "")
        if el.get("name") == to_name and value.startswith("$"):
            text_key = value[1:]
            break
    values = tuple(c.get("value") or c.get("alias") or "" for c in choices.iter() if c.tag == "Choice")
    return Config(from_name=choices.get("name"), to_name=to_name, text_key=text_key, choices=values)


# --- tasks to items -------------------------------------------------------------------------------------


def task_key(task_id: int) -> str:
    return f"{KEY_PREFIX}{task_id}"


def task_id_of(key: str) -> int | None:
    """``ls-12`` -> 12; None for an item that did not come from Label Studio."""
    match = re.fullmatch(rf"{KEY_PREFIX}(\d+)", key)
    return int(match.group(1)) if match else None


def where(task: LSTask, index: int) -> str:
    return f"task {task.id}" if task.id is not None else f"tasks[{index}]"


def task_item(task: LSTask, *, text_key: str, key: str, max_text_chars: int) -> Item:
    """The item of a task: ``data[text_key]`` is the text, other data keys and the predictions go to metadata."""
    data = dict(task.data)
    text = data.pop(text_key, None)
    if text is not None and not isinstance(text, str):
        raise InputError(f"{key}: data.{text_key} must be a string, not {type(text).__name__}")
    if text is not None and len(text) > max_text_chars:
        raise InputError(f"{key}: data.{text_key} has {len(text)} characters; at most {max_text_chars} are accepted")
    if text is None and not data:
        raise InputError(f"{key}: data has no {text_key!r} and nothing else; send the task's data")
    predictions = [p for p in task.predictions if isinstance(p, dict)]  # ids refer to Label Studio's own rows
    if predictions:
        data[PREDICTIONS_KEY] = predictions
    if task.meta:
        data[META_KEY] = dict(task.meta)
    return Item(key=key, text=text, metadata=data)


def item_data(item_text: str | None, meta: dict[str, Any], *, text_key: str) -> dict[str, Any]:
    """The task data of an item (the inverse of :func:`task_item`)."""
    data = {k: v for k, v in meta.items() if k not in (PREDICTIONS_KEY, META_KEY)}
    if item_text is not None:
        data[text_key] = item_text
    return data


# --- results and labels ---------------------------------------------------------------------------------


def choice_of(results: Sequence[dict[str, Any]], *, from_name: str | None, place: str) -> str | None:
    """The label of a result list: its `choices` result (of ``from_name`` when given), else None."""
    for result in results:
        if result.get("type") != "choices" or (from_name is not None and result.get("from_name") != from_name):
            continue
        value = result.get("value")
        choices = value.get("choices") if isinstance(value, dict) else None
        if not isinstance(choices, list) or not all(isinstance(c, str) for c in choices):
            raise InputError(f"{place}: the choices result needs value.choices, a list of labels")
        if len(choices) != 1:
            raise InputError(
                f"{place}: the choices result has {len(choices)} choices; labelagent takes exactly one label per item"
            )
        return choices[0]
    return None


def check_label(label: str, labels: Sequence[str], place: str) -> str:
    if label not in labels:
        raise InputError(f"{place}: label {label!r} is not one of the project's labels {list(labels)}")
    return label


def annotation_label(
    annotation: LSAnnotation, *, from_name: str | None, labels: Sequence[str], place: str
) -> str | None:
    """The annotation's label (checked against ``labels``), or None for a skipped annotation."""
    if annotation.was_cancelled:
        return None
    label = choice_of(annotation.result, from_name=from_name, place=place)
    if label is None:
        wanted = f"with from_name {from_name!r} " if from_name else ""
        raise InputError(f"{place}: the annotation has no choices result {wanted}(labelagent maps one Choices control)")
    return check_label(label, labels, place)


def check_predictions(task: LSTask, *, from_name: str | None, labels: Sequence[str], place: str) -> None:
    """Predictions are kept as they are, but a choice outside the label set is refused like an annotation's."""
    for n, prediction in enumerate(task.predictions):
        if not isinstance(prediction, dict):
            continue  # a prediction id (Label Studio's JSON export): nothing to check
        results = prediction.get("result")
        if not isinstance(results, list) or not all(isinstance(r, dict) for r in results):
            raise InputError(f"{place}: predictions[{n}].result must be a list of results")
        label = choice_of(results, from_name=from_name, place=f"{place} predictions[{n}]")
        if label is not None:
            check_label(label, labels, f"{place} predictions[{n}]")


def choices_result(label: str, *, from_name: str, to_name: str) -> ChoicesResult:
    return ChoicesResult(from_name=from_name, to_name=to_name, value=ChoicesValue(choices=[label]))


def prediction(label: str | None, score: float, *, model_version: str, from_name: str, to_name: str) -> LSPrediction:
    """A prediction; no label (the agent has no suggestion) is an empty result with score 0."""
    if label is None:
        return LSPrediction(result=[], score=0.0, model_version=model_version)
    return LSPrediction(
        result=[choices_result(label, from_name=from_name, to_name=to_name)], score=score, model_version=model_version
    )


def annotation_reason(annotation_id: int | None, task_id: int | None) -> str:
    """What a human label from Label Studio keeps in its ``reason`` (the annotation id finds it again)."""
    if annotation_id is not None:
        return f"{ANNOTATION_REASON}{annotation_id}"
    return f"label studio import of task {task_id}"


def annotation_id_of(reason: str) -> int | None:
    match = re.fullmatch(rf"{ANNOTATION_REASON}(\d+)", reason)
    return int(match.group(1)) if match else None
