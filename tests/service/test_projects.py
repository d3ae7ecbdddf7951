"""Projects and immutable policy versions."""

from __future__ import annotations

import pytest

from policies import ConflictError, InputError, NotFoundError
from service.store import SqlStore
from tests.factories import make_policy


def test_create_project_activates_its_policy(store: SqlStore) -> None:
    policy = make_policy("spam-filter", description="first")
    created = store.projects.create_project("spam-filter", policy)
    assert created.name == "spam-filter"
    assert created.active_version == 1
    assert created.data_kind == "text"
    assert store.projects.get_project("spam-filter").id == created.id
    assert store.projects.active_policy("spam-filter") == policy
    assert [p.name for p in store.projects.list_projects()] == ["spam-filter"]


def test_create_project_twice_is_a_conflict(store: SqlStore) -> None:
    store.projects.create_project("demo", make_policy())
    with pytest.raises(ConflictError, match="already exists"):
        store.projects.create_project("demo", make_policy())


def test_policy_must_name_the_project(store: SqlStore) -> None:
    with pytest.raises(InputError, match=r"policy\.project"):
        store.projects.create_project("other", make_policy("demo"))


def test_unknown_project_is_not_found(store: SqlStore) -> None:
    with pytest.raises(NotFoundError, match="nope"):
        store.projects.get_project("nope")
    with pytest.raises(NotFoundError, match="nope"):
        store.projects.active_policy("nope")


def test_policy_versions_are_immutable(store: SqlStore, project: str) -> None:
    v2 = make_policy(project, version=2, description="stricter", target_precision=0.99)
    store.projects.add_policy_version(project, v2)
    assert store.projects.active_policy(project).version == 1  # adding does not activate
    store.projects.add_policy_version(project, v2)  # the same content again: a no-op
    changed = make_policy(project, version=2, description="edited in place")
    with pytest.raises(ConflictError, match=r"immutable.*version 3"):
        store.projects.add_policy_version(project, changed)
    assert store.projects.get_policy(project, 2) == v2
    assert store.projects.next_policy_version(project) == 3
    assert [pv.version for pv in store.projects.list_policy_versions(project)] == [1, 2]


def test_activate_and_roll_back(store: SqlStore, project: str) -> None:
    v2 = make_policy(project, version=2, target_precision=0.99)
    store.projects.add_policy_version(project, v2, activate=True)
    assert store.projects.active_policy(project).target_precision == 0.99
    store.projects.activate_policy(project, 1)
    assert store.projects.active_policy(project).version == 1
    assert store.projects.get_project(project).active_version == 1
    with pytest.raises(NotFoundError):
        store.projects.activate_policy(project, 7)


def test_a_new_store_reads_policies_from_the_database(engine, project: str, policy) -> None:
    fresh = SqlStore(engine)  # empty caches: parses the stored YAML
    assert fresh.projects.active_policy(project) == policy
