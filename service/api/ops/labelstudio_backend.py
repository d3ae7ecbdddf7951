"""Label Studio's ML backend (``/predict``, ``/setup``, ``/health``, ``/versions``) for one project.

``/predict`` answers with what labelagent knows now: the item's stored label (human or agent) when the task was
imported before, else the agent's decision on the task's data, computed by a private
:class:`~agent.runner.BatchLabeler` of the active policy version (the worker runtime's code path, with its learner
restored from the store's ground truth and calibration records) and never stored. One graph run labels the whole
batch. The labeler is cached per project and rebuilt when the policy version changes, or when ground truth changed
and it is older than :data:`REFRESH_SECONDS` (or ``START_TRAINING`` drops it).

``model_version`` names what ``/predict`` would answer: the policy key, then a digest of the ground truth the
labeler in use learned from and of the project's labels (stored labels are answers too), e.g. ``spam/3@1f0c2a9b7e``.
Label Studio asks ``/setup`` for it before retrieving predictions and skips only the tasks that have a prediction
of that version, so every change in what labelagent would answer refreshes Label Studio's predictions.
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
import time
from dataclasses import dataclass, field

from agent.runner import BatchLabeler
from policies import InputError, Policy
from service.api.deps import ToolFactory
from service.api.labelstudio import (
    Config,
    PredictRequest,
    PredictResponse,
    SetupResponse,
    item_data,
    parse_label_config,
    prediction,
    task_item,
    task_key,
)
from service.runtime.certified import restore_labeler
from service.store import SqlStore
from service.store.labelstudio import label_marks, stored_items
from tools.base import Item

REFRESH_SECONDS = 300.0  # a rebuild retrains the learner on all ground truth: not on every new answer
DEFAULT_FROM_NAME = "label"
DEFAULT_TO_NAME = "text"
DEFAULT_TEXT_KEY = "text"
MODEL_CLASS = "labelagent"


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

    def _current(self, project: str, version: int, mark: tuple[int, int]) -> Predictor | None:
        current = self._by_project.get(project)
        if (
            current is not None
            and current.version == version
            and (current.mark == mark or time.monotonic() - current.built < self.refresh)
        ):
            return current
        return None

    def mark_in_use(self, project: str, version: int, mark: tuple[int, int]) -> tuple[int, int]:
        """The ground-truth mark the labeler ``get`` would use now: the cached one's, or ``mark`` (a rebuild)."""
        with self._lock:
            current = self._current(project, version, mark)
        return current.mark if current is not None else mark

    def get(self, store: SqlStore, project: str, policy: Policy, tool_factory: ToolFactory) -> Predictor:
        mark = label_marks(store, project)[0]
        with self._lock:  # builds are rare; one at a time keeps two requests from training twice
            current = self._current(project, policy.version, mark)
            if current is not None:
                return current
            labeler = BatchLabeler(policy, tool_factory(policy))
            # i14: the workers' certificate
            restore_labeler(store, project, labeler, store.learning.load_ground_truth(project))
            current = Predictor(labeler, policy.version, mark, time.monotonic())
            self._by_project[project] = current
            self.builds += 1
            return current


def model_version(*, store: SqlStore, predictors: Predictors, project: str, policy: Policy) -> str:
    """What ``/predict`` would answer now, as a version (module doc)."""
    human, labels = label_marks(store, project)
    learned = predictors.mark_in_use(project, policy.version, human)
    digest = hashlib.sha256(repr((learned, labels)).encode()).hexdigest()[:10]
    return f"{policy.key}@{digest}"


def names(config: Config) -> tuple[str, str, str]:
    return (
        config.from_name or DEFAULT_FROM_NAME,
        config.to_name or DEFAULT_TO_NAME,
        config.text_key or DEFAULT_TEXT_KEY,
    )


def predict(
    *, store: SqlStore, predictors: Predictors, tool_factory: ToolFactory, project: str, body: PredictRequest
) -> PredictResponse:
    """One prediction per task, in order, in the labeling config's ``Choices`` control. A task whose item exists
    with the same data and has a label gets that label (human labels score 1); the rest go through the agent."""
    policy = store.projects.active_policy(project)
    from_name, to_name, text_key = names(parse_label_config(body.label_config))
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
    version = model_version(store=store, predictors=predictors, project=project, policy=policy)
    results = [
        prediction(answers[i][0], answers[i][1], model_version=version, from_name=from_name, to_name=to_name)
        for i in range(len(body.tasks))
    ]
    return PredictResponse(results=results, model_version=version)


def setup(*, store: SqlStore, predictors: Predictors, project: str, label_config: str | None) -> SetupResponse:
    """The model version (module doc), after checking that the labeling config's ``Choices`` offer every label of
    the project (else Label Studio could not show the agent's labels)."""
    policy = store.projects.active_policy(project)
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
    return SetupResponse(model_version=model_version(store=store, predictors=predictors, project=project,
                                                     policy=policy))
