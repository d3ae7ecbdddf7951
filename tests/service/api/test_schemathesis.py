"""Schemathesis against the app's OpenAPI schema with operator, ingest and reviewer keys: zero 5xx responses, zero
responses that violate the schema and zero undocumented status codes (bounded: a fixed seed and a few examples per
operation and key; every operation but the event stream, which never ends while its key lives)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import pytest
import schemathesis
from fastapi import FastAPI
from hypothesis import HealthCheck, seed, settings
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from service.api.app import create_app
from service.api.deps import get_tool_factory
from service.settings import Settings
from service.store import SqlStore
from service.store.db import create_all, make_engine
from tests.factories import make_policy
from tests.service.api.conftest import decide
from tests.service.api.tools import keyword_tools


def _build() -> tuple[FastAPI, dict[str, str]]:
    """The app over a seeded SQLite file (built at import: schemathesis parametrizes from the schema at collection;
    its lazy fixture loader does not work with this pytest)."""
    engine = make_engine(f"sqlite:///{Path(tempfile.mkdtemp(prefix='labelagent-st-')) / 'st.db'}")
    create_all(engine)
    store = SqlStore(engine, Settings(max_batch_items=50))
    store.projects.create_project("demo", make_policy("demo"))
    decide(store, "demo", ["escalate", "accept", "audit"])
    keys = {role: store.projects.create_key(name=f"schemathesis-{role}", role=role)[0]
            for role in ("operator", "ingest", "reviewer")}
    app = create_app(store.settings.model_copy(update={"rate_limit_per_second": 0}), store=store)
    app.dependency_overrides[get_tool_factory] = lambda: keyword_tools
    return app, keys


APP, KEYS = _build()
schema = schemathesis.openapi.from_asgi("/openapi.json", APP).exclude(path_regex=r"/events$")
CHECKS = [not_a_server_error, response_schema_conformance, content_type_conformance, status_code_conformance]


@pytest.mark.parametrize("role", sorted(KEYS))
@schema.parametrize()
@seed(17)
@settings(max_examples=3, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_api_conforms_to_its_schema(case, role: str) -> None:  # type: ignore[no-untyped-def]
    case.call_and_validate(headers={"Authorization": f"Bearer {KEYS[role]}"}, checks=CHECKS)
