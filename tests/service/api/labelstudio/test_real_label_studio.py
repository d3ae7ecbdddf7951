"""Contract test: a real Label Studio (``label-studio==1.23.2`` from PyPI, :mod:`.real`) drives labelagent as its ML
backend over HTTP, as a user would: a project, the backend connected with Basic authentication, predictions
retrieved, 100 annotations arriving as ground truth through the webhook (made to carry its key with the README's
one PATCH), predictions refreshed after Start Training, both export routes (and JSON-MIN) imported into labelagent,
and labelagent's export imported into Label Studio again.

Slow (minutes; the first run also installs Label Studio). Without Label Studio (no PyPI access) it skips, or
fails when ``CI`` is set.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import Engine

from service.api.app import create_app
from service.settings import Settings
from service.store import SqlStore
from tests.conftest import unreachable
from tests.factories import make_policy
from tests.service.api.conftest import RecordingSink
from tests.service.api.labelstudio import real
from tests.service.api.labelstudio.helpers import LABELS

pytestmark = pytest.mark.slow
P = "contract"
CONFIG = ('<View><Text name="text" value="$text"/><Choices name="label" toName="text">'
          + "".join(f'<Choice value="{label}"/>' for label in LABELS) + "</Choices></View>")
WORDS = {"sports": "football match goal", "politics": "election vote parliament", "technology": "software chip"}
N_TASKS, N_ANNOTATED = 120, 100


@pytest.fixture(scope="module")
def label_studio(tmp_path_factory: pytest.TempPathFactory) -> Iterator[real.LabelStudio]:
    try:
        python = real.ensure_virtualenv()
        ls = real.start(python, tmp_path_factory.mktemp("label-studio"))
    except (OSError, RuntimeError, subprocess.SubprocessError) as exc:  # no PyPI, or Label Studio does not start
        unreachable(f"Label Studio {real.VERSION}", exc, "Label Studio contract")
    try:
        yield ls
    finally:
        real.stop(ls)


@pytest.fixture
def labelagent(sqlite_engine: Engine) -> Iterator[tuple[str, SqlStore, str, str]]:
    """labelagent on a free loopback port: (url, store, operator key, Label Studio's reviewer key)."""
    store = SqlStore(sqlite_engine, Settings())
    for project in (P, f"{P}-json", f"{P}-snapshot", f"{P}-min"):
        store.projects.create_project(project, make_policy(project, labels=LABELS))
    operator = store.projects.create_key(name="contract", role="operator")[0]
    reviewer = store.projects.create_key(name="label-studio", role="reviewer", projects=[P])[0]
    app = create_app(store.settings.model_copy(update={"rate_limit_per_second": 0}), store=store,
                     feedback=RecordingSink())
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert thread.is_alive() and time.monotonic() < deadline, "uvicorn did not start"
        time.sleep(0.05)
    port = server.servers[0].sockets[0].getsockname()[1]
    yield f"http://127.0.0.1:{port}", store, operator, reviewer
    server.should_exit = True
    thread.join(30)


def text_of(i: int) -> tuple[str, str]:
    label = LABELS[i % len(LABELS)]
    return label, f"note {i}: {WORDS[label]} number {i}"


def choices(label: str) -> list[dict[str, Any]]:
    return [{"from_name": "label", "to_name": "text", "type": "choices", "value": {"choices": [label]}}]


def predictions(ls: real.LabelStudio, project: int) -> list[dict[str, Any]]:
    return ls.call("GET", "/api/predictions/", params={"project": project})


def retrieve_predictions(ls: real.LabelStudio, project: int) -> None:
    """The Data Manager's "Retrieve Predictions" on every task."""
    ls.call("POST", "/api/dm/actions", params={"id": "retrieve_tasks_predictions", "project": project},
            json={"selectedItems": {"all": True, "excluded": []}})


def connect(ls: real.LabelStudio, url: str, key: str, truth: dict[str, str]) -> tuple[int, list[dict[str, Any]], int]:
    """A project with the tasks, labelagent connected as its ML backend with Basic authentication, and the
    README's PATCH that gives the backend's webhook the key. Returns (project, tasks, backend)."""
    project = ls.call("POST", "/api/projects", json={"title": "labelagent contract", "label_config": CONFIG})["id"]
    ls.call("POST", f"/api/projects/{project}/import",
            json=[{"data": {"text": text}, "meta": {"batch": "b7"}} for text in truth])
    tasks = ls.call("GET", "/api/tasks", params={"project": project, "page_size": 1000})["tasks"]
    assert len(tasks) == N_TASKS
    backend = ls.call("POST", "/api/ml", json={
        "url": f"{url}/label-studio/{P}", "project": project, "title": "labelagent", "auth_method": "BASIC_AUTH",
        "basic_auth_user": "label-studio", "basic_auth_pass": key, "is_interactive": False})
    (hook,) = [h for h in ls.call("GET", "/api/webhooks/", params={"project": project})
               if h["url"] == f"{url}/label-studio/{P}/webhook"]
    ls.call("PATCH", f"/api/webhooks/{hook['id']}/", json={"headers": {"Authorization": f"Bearer {key}"}})
    return project, tasks, backend["id"]


def annotate(ls: real.LabelStudio, store: SqlStore, tasks: list[dict[str, Any]], truth: dict[str, str]) -> None:
    """100 annotations (and one skipped task) arrive as ground truth through the webhook."""
    for task in tasks[:N_ANNOTATED]:
        ls.call("POST", f"/api/tasks/{task['id']}/annotations/",
                json={"result": choices(truth[task["data"]["text"]]), "lead_time": 2.5})
    skipped = tasks[N_ANNOTATED]
    ls.call("POST", f"/api/tasks/{skipped['id']}/annotations/", json={"result": [], "was_cancelled": True})
    ground = real.eventually(lambda: g if len(g := store.learning.load_ground_truth(P)) == N_ANNOTATED else None,
                             what="100 annotations as ground truth")
    assert {gt.item.key: gt.label for gt in ground} == {
        f"ls-{t['id']}": truth[t["data"]["text"]] for t in tasks[:N_ANNOTATED]}


def refreshed(ls: real.LabelStudio, project: int, backend: int, cold: str) -> dict[int, dict[str, Any]]:
    """Start Training, then Retrieve Predictions: a new model version, so Label Studio predicts every task again.
    Returns the new predictions by task id."""
    ls.call("POST", f"/api/ml/{backend}/train", json={})
    retrieve_predictions(ls, project)
    fresh = [p for p in predictions(ls, project) if p["model_version"] != cold]
    assert len(fresh) == N_TASKS, Counter(p["model_version"] for p in predictions(ls, project))
    return {p["task"]: p for p in fresh}


def exports_into_labelagent(
    ls: real.LabelStudio, la: httpx.Client, store: SqlStore, project: int, expected: dict[str, str]
) -> dict[str, Any]:
    """Both export routes (the JSON export, a snapshot) and JSON-MIN import into labelagent: the same ground truth."""
    exports = {
        name: ls.call("GET", f"/api/projects/{project}/export",
                      params={"exportType": kind, "download_all_tasks": "true"})
        for name, kind in (("json", "JSON"), ("min", "JSON_MIN"))
    }
    snapshot = ls.call("POST", f"/api/projects/{project}/exports/", json={})
    exports["snapshot"] = ls.call("GET", f"/api/projects/{project}/exports/{snapshot['id']}/download",
                                  params={"exportType": "JSON"})
    assert all(isinstance(p, int) for t in exports["json"] for p in t["predictions"])  # ids, as the issue says
    for name, body in exports.items():
        response = la.post(f"/projects/{P}-{name}/label-studio/import", json=body)
        assert response.status_code == 200, (name, response.text)
        assert len(response.json()["ground_truth"]) == N_ANNOTATED, name
        assert {gt.item.key: gt.label for gt in store.learning.load_ground_truth(f"{P}-{name}")} == expected, name
    return exports


def annotation_counts(tasks: list[dict[str, Any]]) -> Counter[tuple[str, bool, str | None, float | None]]:
    return Counter(
        (t["data"]["text"], a["was_cancelled"], a["result"][0]["value"]["choices"][0] if a["result"] else None,
         a["lead_time"])
        for t in tasks for a in t["annotations"])


def test_label_studio_drives_labelagent_end_to_end(
    label_studio: real.LabelStudio, labelagent: tuple[str, SqlStore, str, str], capsys: pytest.CaptureFixture[str]
) -> None:
    started = time.monotonic()
    ls = label_studio
    url, store, operator, reviewer = labelagent
    with capsys.disabled():
        print(f"\n[contract] driving Label Studio {ls.version} at {ls.url} (labelagent at {url})")
    assert ls.version == real.VERSION
    truth = dict(text_of(i)[::-1] for i in range(N_TASKS))  # text -> label
    project, tasks, backend = connect(ls, url, reviewer, truth)

    retrieve_predictions(ls, project)  # cold start: every task gets a prediction of the current version
    first = predictions(ls, project)
    assert len(first) == N_TASKS
    (cold,) = {p["model_version"] for p in first}
    assert cold.startswith(f"{P}/1@")

    annotate(ls, store, tasks, truth)
    by_task = refreshed(ls, project, backend, cold)
    for task in tasks[:N_ANNOTATED]:  # the annotated tasks are predicted with their ground truth
        assert by_task[task["id"]]["result"][0]["value"]["choices"] == [truth[task["data"]["text"]]]
        assert by_task[task["id"]]["score"] == 1.0

    la = httpx.Client(base_url=url, headers={"Authorization": f"Bearer {operator}"}, timeout=300)
    expected = {f"ls-{t['id']}": truth[t["data"]["text"]] for t in tasks[:N_ANNOTATED]}
    original = exports_into_labelagent(ls, la, store, project, expected)["json"]

    # labelagent's export (every annotation, the skipped one too, and the meta) imports into Label Studio
    mine = la.get(f"/projects/{P}-json/label-studio/export", params={"limit": 1000}).json()
    assert len(mine) == N_TASKS and all(t["meta"]["batch"] == "b7" for t in mine)
    copy = ls.call("POST", "/api/projects", json={"title": "labelagent round trip", "label_config": CONFIG})["id"]
    ls.call("POST", f"/api/projects/{copy}/import", json=mine)
    back = ls.call("GET", f"/api/projects/{copy}/export", params={"exportType": "JSON", "download_all_tasks": "true"})
    assert len(back) == N_TASKS and annotation_counts(back) == annotation_counts(original)
    assert sum(a["was_cancelled"] for t in back for a in t["annotations"]) == 1
    assert all(t["meta"]["batch"] == "b7" for t in back)
    with capsys.disabled():
        print(f"[contract] Label Studio {ls.version}: passed in {time.monotonic() - started:.0f} s "
              "(after Label Studio's start)")
