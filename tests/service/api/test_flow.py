"""The whole path over the API: ingest, a worker labels (``ProjectWorker`` with the real agent), a scripted reviewer
clears the queue through the review routes; every item ends labeled once. And the app factory's own engine."""

from __future__ import annotations

import asyncio

from fastapi.testclient import TestClient

from agent.runner import BatchLabeler
from service.api.app import create_app
from service.runtime.cycle import ProjectWorker
from service.settings import Settings
from service.store import SqlStore
from service.store.db import create_all, make_engine
from tests.factories import make_items
from tests.service.api.conftest import RecordingSink
from tests.service.api.tools import keyword_tools


def test_ingest_label_review_until_every_item_is_labeled(client: TestClient, project: str, store: SqlStore,
                                                         sink: RecordingSink) -> None:
    items = make_items(120)
    truth = {it.key: "spam" if "win" in (it.text or "") else "ham" for it in items}
    for start in range(0, len(items), 50):
        body = {"items": [{"external_id": it.key, "data": {"text": it.text, "metadata": it.metadata}}
                          for it in items[start:start + 50]]}
        assert client.post(f"/projects/{project}/items", json=body).status_code == 200
    policy = store.projects.active_policy(project)
    worker = ProjectWorker(store, project, BatchLabeler(policy, keyword_tools(policy)), batch_size=32)

    async def drain() -> None:
        while (await worker.process_batch()).items:
            pass

    asyncio.run(drain())
    reviewed = 0
    while (response := client.post(f"/projects/{project}/reviews/claim", json={"reviewer": "oracle"})).status_code \
            == 200:
        task = response.json()
        answer = {"lease_token": task["lease_token"], "label": truth[task["item"]["external_id"]]}
        assert client.post(f"/reviews/{task['task_id']}/submit", json=answer).json()["settled"] is True
        reviewed += 1
    assert response.status_code == 204
    assert reviewed == len(items)  # no calibration yet: the agent sends everything to review (cold start)
    assert sink.projects == [project] * (3 + reviewed)  # three ingest calls, then every answer
    metrics = client.get(f"/projects/{project}/metrics").json()
    assert metrics["items"]["labeled"] == len(items)
    assert metrics["queue"]["depth"] == 0
    export = client.get(f"/projects/{project}/labels", params={"limit": 1000}).text.splitlines()
    assert len(export) == len(items)
    for it in items[:5]:
        item = client.get(f"/projects/{project}/items/{it.key}").json()
        assert (item["status"], item["label"], item["source"]) == ("labeled", truth[it.key], "human")


def test_app_opens_its_own_engine_from_the_settings(tmp_path) -> None:  # type: ignore[no-untyped-def]
    url = f"sqlite:///{tmp_path / 'app.db'}"
    engine = make_engine(url)
    create_all(engine)
    engine.dispose()
    settings = Settings(database_url=url, max_batch_items=7)
    app = create_app(settings)
    with TestClient(app) as client:
        assert client.get("/health").json() == {"status": "ok", "database": "ok"}
        store = app.state.store
        key, _ = store.projects.create_key(name="t", role="reviewer")
        assert client.get("/projects", headers={"X-API-Key": key}).json() == []
        assert isinstance(store, SqlStore) and store.settings.max_batch_items == 7
    assert app.state.settings is settings and not app.dependency_overrides
