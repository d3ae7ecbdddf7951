"""Task ids are parsed once, canonically, and the project scope is checked on the parsed id and again inside the
store call (finding 2 of issue 17): ``+53``, ``53.0``, ``5_3``, ``%2053``... never reach another project's task."""

from __future__ import annotations

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from policies import NotFoundError
from service.store import SqlStore
from tests.factories import make_policy
from tests.service.api.conftest import auth, decide

SPELLINGS = ["+{}", "{}.0", "0{}", "{}%20", "%20{}", " {}", "{}_", "+0{}", "{}e0", "0x{}", "１"]


@pytest.fixture
def foreign_task(store: SqlStore, client: TestClient) -> dict:
    """A task of project 'theirs', claimed by an operator: its id and lease token."""
    store.projects.create_project("theirs", make_policy("theirs"))
    decide(store, "theirs", ["escalate"])
    response = client.post("/projects/theirs/reviews/claim", json={"reviewer": "op"})
    assert response.status_code == 200
    return response.json()


def test_non_canonical_task_ids_never_reach_another_projects_task(app: FastAPI, store: SqlStore,
                                                                  foreign_task: dict) -> None:
    store.projects.create_project("mine", make_policy("mine"))
    key = store.projects.create_key(name="r", role="reviewer", projects=["mine"])[0]
    task, token = foreign_task["task_id"], foreign_task["lease_token"]
    with TestClient(app, raise_server_exceptions=False, headers=auth(key)) as reviewer:
        for spelling in [s.format(task) for s in SPELLINGS] + [str(task)]:
            for action, body in (("submit", {"lease_token": token, "label": "ham"}),
                                 ("heartbeat", {"lease_token": token}), ("skip", {"lease_token": token}),
                                 ("release", {"lease_token": token})):
                response = reviewer.post(f"/reviews/{spelling}/{action}", json=body)
                assert response.status_code in (404, 422), (spelling, action, response.status_code, response.text)
    assert store.reviews.count_tasks("theirs")["claimed"] == 1  # nothing was submitted, skipped or released


def test_canonical_ids_still_work(client: TestClient, store: SqlStore, foreign_task: dict) -> None:
    task, token = foreign_task["task_id"], foreign_task["lease_token"]
    assert client.post(f"/reviews/+{task}/heartbeat", json={"lease_token": token}).status_code == 422
    assert client.post(f"/reviews/{task}/heartbeat", json={"lease_token": token}).status_code == 200
    assert client.post(f"/reviews/{task}/submit", json={"lease_token": token, "label": "ham"}).status_code == 200


def test_the_store_checks_the_scope_again(store: SqlStore, foreign_task: dict) -> None:
    task, token = foreign_task["task_id"], foreign_task["lease_token"]
    scope = frozenset({"mine"})
    with pytest.raises(NotFoundError):
        store.reviews.extend_review_lease(task, token, projects=scope)
    with pytest.raises(NotFoundError):
        store.reviews.skip_review(task, token, seconds=60, projects=scope)
    with pytest.raises(NotFoundError):
        store.reviews.release_review(task, token, projects=scope)
    with pytest.raises(NotFoundError):
        store.reviews.submit_review(task, token, "ham", project="theirs", projects=scope)
    assert store.reviews.count_tasks("theirs")["claimed"] == 1
