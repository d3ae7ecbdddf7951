"""Errors nobody raised on purpose: a database that is restarting is a 503 to retry, anything else a bare 500."""

from __future__ import annotations

import json

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import exc as sa_exc

from service.api.errors import DB_RETRY_AFTER_SECONDS, install_error_handlers


def _app(error: Exception) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/boom")
    def boom() -> None:
        raise error

    return app


@pytest.mark.parametrize("error", [
    sa_exc.OperationalError("SELECT 1", {}, Exception("server closed the connection unexpectedly")),
    sa_exc.InterfaceError("SELECT 1", {}, Exception("connection already closed")),
])
def test_a_lost_database_connection_is_a_503_with_retry_after(error: Exception) -> None:
    response = TestClient(_app(error), raise_server_exceptions=False).get("/boom")
    assert response.status_code == 503
    assert response.headers["Retry-After"] == str(DB_RETRY_AFTER_SECONDS)
    assert response.json() == {"error": {"type": "database_unavailable",
                                         "message": "the database is unavailable; retry shortly"}}


def test_other_unexpected_errors_are_a_500_without_details() -> None:
    error = sa_exc.IntegrityError("INSERT", {}, Exception("duplicate key value violates unique constraint"))
    response = TestClient(_app(error), raise_server_exceptions=False).get("/boom")
    assert response.status_code == 500
    assert "duplicate" not in json.dumps(response.json())
    assert response.json()["error"]["type"] == "internal"
