"""Label Studio: ``/projects/{project}/label-studio`` (import an export, export labels as tasks; operators) and
``/label-studio/{project}`` (a Label Studio ML backend: predict, setup, health, webhook).

Label Studio's "Connect model" dialog sends Basic authentication with every ML backend request: any user name and
the API key as password. Webhooks configured in Label Studio send the headers given there: ``Authorization: Bearer
<key>``, ``Authorization: Token <key>`` or ``X-API-Key: <key>``. A reviewer key scoped to the project can call
every ``/label-studio/{project}`` route (annotations are reviews); ingest keys may predict but not send webhooks.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Callable, Coroutine
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request, Response, Security
from fastapi.exceptions import RequestValidationError
from fastapi.security import HTTPAuthorizationCredentials, HTTPBasic, HTTPBasicCredentials

from policies import AuthenticationError, LabelAgentError
from service.api.deps import (
    ANY_ROLE,
    OPERATOR,
    REVIEWER,
    Allow,
    FeedbackDep,
    Principal,
    ProjectPath,
    StoreDep,
    ToolFactoryDep,
    _api_key,
    _bearer,
    get_principal,
)
from service.api.errors import error_docs, status_of
from service.api.gate import OffLoopRoute
from service.api.labelstudio import (
    HealthResponse,
    ImportResponse,
    LSTaskOut,
    LSTasks,
    PredictRequest,
    PredictResponse,
    SetupRequest,
    SetupResponse,
    TrainRequest,
    VersionsResponse,
    WebhookRequest,
    WebhookResponse,
)
from service.api.ops import labelstudio as ops
from service.api.ops import labelstudio_backend as backend


class LoggedRoute(OffLoopRoute):
    """A route whose refusals are logged with their reason (``labelagent.labelstudio``, WARNING): Label Studio
    shows only the status line ("422 Client Error: Unprocessable Entity for url: .../setup") and sends its user to
    the ML backend's console log for the reason."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def logged(request: Request) -> Response:
            try:
                return await handler(request)
            except LabelAgentError as exc:
                status, _ = status_of(exc)
                if status < 500:  # the error handler logs the rest
                    log.warning("%s %s refused (%d): %s", request.method, request.url.path, status, exc)
                raise
            except RequestValidationError as exc:
                reasons = "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()[:5])
                log.warning("%s %s refused (422): %s", request.method, request.url.path, reasons)
                raise

        return logged


router = APIRouter(prefix="/projects/{project}/label-studio", tags=["label-studio"], route_class=LoggedRoute)
ml_router = APIRouter(prefix="/label-studio/{project}", tags=["label-studio"], route_class=LoggedRoute)
routers = (router, ml_router)
log = logging.getLogger("labelagent.labelstudio")


class _Basic(HTTPBasic):
    """Basic credentials, or None; a malformed Basic header is a 401 with labelagent's error body."""

    async def __call__(self, request: Request) -> HTTPBasicCredentials | None:  # type: ignore[override]
        scheme, _, value = request.headers.get("Authorization", "").partition(" ")
        if scheme.lower() != "basic":
            return None
        try:
            user, sep, password = base64.b64decode(value.strip(), validate=True).decode().partition(":")
        except (ValueError, UnicodeDecodeError, binascii.Error):
            raise AuthenticationError("the Basic credentials are not base64 of 'user:password'") from None
        if not sep:
            raise AuthenticationError("the Basic credentials are not base64 of 'user:password'")
        return HTTPBasicCredentials(username=user, password=password)


_basic = _Basic(auto_error=False, description="Label Studio's Basic authentication: any user, the API key as password")


def label_studio_principal(
    request: Request,
    store: StoreDep,
    basic: Annotated[HTTPBasicCredentials | None, Security(_basic)] = None,
    bearer: Annotated[HTTPAuthorizationCredentials | None, Security(_bearer)] = None,
    header: Annotated[str | None, Security(_api_key)] = None,
) -> Principal:
    """The caller's key from Basic authentication (the password), ``Authorization: Token <key>`` (Label Studio's
    own scheme), or the usual ``Bearer`` and ``X-API-Key`` headers."""
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    key = basic.password or basic.username if basic is not None else None
    if key is None and scheme.lower() == "token" and token.strip():
        key = token.strip()
    if key is not None:
        bearer = HTTPAuthorizationCredentials(scheme="Bearer", credentials=key)
    return get_principal(request, store, bearer=bearer, header=header)


class AllowLabelStudio(Allow):
    """:class:`~service.api.deps.Allow` over :func:`label_studio_principal` (Basic and Token schemes too)."""

    schemes = frozenset({"bearer", "basic", "token"})

    async def __call__(
        self, request: Request, principal: Annotated[Principal, Depends(label_studio_principal)], store: StoreDep
    ) -> Principal:
        return await super().__call__(request, principal, store)


def allow_ls(*roles: str) -> list[Any]:
    return [Depends(AllowLabelStudio(*roles))]


def get_predictors(request: Request) -> backend.Predictors:
    predictors = getattr(request.app.state, "label_studio_predictors", None)
    if predictors is None:
        predictors = request.app.state.label_studio_predictors = backend.Predictors()
    return predictors


PredictorsDep = Annotated[backend.Predictors, Depends(get_predictors)]
TextKey = Annotated[
    str,
    Query(
        min_length=1,
        max_length=128,
        pattern=r"^[^\x00-\x1f]+$",
        description="The task data key holding the item's text.",
    ),
]
CONTROL_NAME = {"min_length": 1, "max_length": 128, "pattern": r"^[^\x00-\x1f]+$"}  # a Label Studio control name
ControlName = Annotated[str, Query(**CONTROL_NAME)]


@router.post(
    "/import",
    dependencies=allow_ls(*OPERATOR),
    response_model=ImportResponse,
    summary="Import a Label Studio JSON export (tasks, annotations as ground truth, predictions kept)",
    responses=error_docs(404, 422),
)
def import_tasks(
    project: ProjectPath,
    body: LSTasks,
    store: StoreDep,
    feedback: FeedbackDep,
    text_key: TextKey = backend.DEFAULT_TEXT_KEY,
    from_name: Annotated[
        str | None,
        Query(**CONTROL_NAME, description="Read only this Choices control's results (default: any choices result)."),
    ] = None,
) -> ImportResponse:
    """Idempotent by task id (item `ls-<id>`); every annotation is kept, the latest one that is not skipped is the
    item's human label. JSON, snapshot and JSON-MIN exports are read."""
    tasks = ops.as_tasks(body.root, store=store, project=project, text_key=text_key, from_name=from_name)
    return ops.import_tasks(
        store=store, feedback=feedback, project=project, tasks=tasks, text_key=text_key, from_name=from_name
    )


@router.get(
    "/export",
    dependencies=allow_ls(*OPERATOR),
    response_model=list[LSTaskOut],
    summary="Export items and labels as Label Studio tasks (JSON list, paginated)",
    responses=error_docs(404, 422),
)
def export_tasks(
    project: ProjectPath,
    store: StoreDep,
    response: Response,
    text_key: TextKey = backend.DEFAULT_TEXT_KEY,
    from_name: ControlName = backend.DEFAULT_FROM_NAME,
    to_name: ControlName = backend.DEFAULT_TO_NAME,
    after: Annotated[int, Query(ge=0, le=2**62, description="X-Next-Cursor of the previous page")] = 0,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
) -> list[LSTaskOut]:
    """Human labels are `annotations`, the agent's are `predictions` (score = confidence, model_version = policy
    key). `X-Next-Cursor` continues; `X-Has-More: true` while more items exist."""
    tasks, cursor, more = ops.export_tasks(
        store=store, project=project, text_key=text_key, from_name=from_name, to_name=to_name, after=after, limit=limit
    )
    response.headers["X-Next-Cursor"] = str(cursor)
    response.headers["X-Has-More"] = "true" if more else "false"
    return tasks


@ml_router.post(
    "/predict",
    dependencies=allow_ls(*ANY_ROLE),
    response_model=PredictResponse,
    summary="Label Studio ML backend: predict labels for tasks",
    responses=error_docs(404, 422, 503),
)
def predict(
    project: ProjectPath, body: PredictRequest, store: StoreDep, predictors: PredictorsDep, tool_factory: ToolFactoryDep
) -> PredictResponse:
    """Stored labels for tasks imported before, the agent's current decision for the others (not stored)."""
    return backend.predict(store=store, predictors=predictors, tool_factory=tool_factory, project=project, body=body)


@ml_router.post(
    "/setup",
    dependencies=allow_ls(*ANY_ROLE),
    response_model=SetupResponse,
    summary="Label Studio ML backend: check the labeling config, return the model version",
    responses=error_docs(404, 422),
)
def setup(project: ProjectPath, body: SetupRequest, store: StoreDep, predictors: PredictorsDep) -> SetupResponse:
    """Label Studio calls it before every prediction run: `model_version` changes whenever what /predict would
    answer changes, so Label Studio refreshes its predictions."""
    return backend.setup(store=store, predictors=predictors, project=project, label_config=body.label_config)


@ml_router.get(
    "/health",
    dependencies=allow_ls(*ANY_ROLE),
    response_model=HealthResponse,
    summary="Label Studio ML backend: health",
    responses=error_docs(404),
)
def health(project: ProjectPath, store: StoreDep, predictors: PredictorsDep) -> HealthResponse:
    version = backend.model_version(store=store, predictors=predictors, project=project,
                                    policy=store.projects.active_policy(project))
    return HealthResponse(model_class=backend.MODEL_CLASS, model_version=version)


@ml_router.get(
    "/versions",
    dependencies=allow_ls(*ANY_ROLE),
    response_model=VersionsResponse,
    summary="Label Studio ML backend: the model versions (the current one)",
    responses=error_docs(404),
)
def versions(project: ProjectPath, store: StoreDep, predictors: PredictorsDep) -> VersionsResponse:
    version = backend.model_version(store=store, predictors=predictors, project=project,
                                    policy=store.projects.active_policy(project))
    return VersionsResponse(versions=[version])


@ml_router.post(
    "/webhook",
    dependencies=allow_ls(*REVIEWER),
    response_model=WebhookResponse,
    status_code=201,
    summary="Label Studio webhooks: annotations become ground truth; START_TRAINING",
    responses=error_docs(404, 422),
)
def webhook(
    project: ProjectPath, body: WebhookRequest, store: StoreDep, feedback: FeedbackDep, predictors: PredictorsDep
) -> WebhookResponse:
    """ANNOTATION_CREATED/UPDATED: the annotation's label replaces the item's label as a human label;
    ANNOTATION(S)_DELETED: that ground truth is removed (the item goes back to review or to the agent);
    TASK(S)_CREATED: tasks imported; START_TRAINING: workers woken, /predict reloads; others acknowledged."""
    return ops.webhook(store=store, feedback=feedback, predictors=predictors, project=project, body=body)


@ml_router.post(
    "/train",
    dependencies=allow_ls(*REVIEWER),
    response_model=WebhookResponse,
    status_code=201,
    summary="Label Studio's Start Training without its webhook flag: the same as the START_TRAINING webhook",
    responses=error_docs(404),
)
def train(
    project: ProjectPath, body: TrainRequest, store: StoreDep, feedback: FeedbackDep, predictors: PredictorsDep
) -> WebhookResponse:
    """Label Studio 1.23 posts its annotated tasks here (unless its START_TRAINING webhook flag is on); labelagent
    has them already from the annotation webhooks, so the body is not read."""
    return ops.webhook(store=store, feedback=feedback, predictors=predictors, project=project,
                       body=WebhookRequest(action="START_TRAINING"))
