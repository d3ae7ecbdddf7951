"""The Label Studio tests' project: ``topics``, with the labels of the documentation's examples."""

from __future__ import annotations

import pytest

from service.store import SqlStore
from tests.factories import make_policy
from tests.service.api.labelstudio.helpers import LABELS, P


@pytest.fixture
def topics(store: SqlStore) -> str:
    store.projects.create_project(P, make_policy(P, labels=LABELS))
    return P
