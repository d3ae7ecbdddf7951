"""The OpenAPI schema lists every route with its request and response models; the docs page is served."""

from __future__ import annotations

from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from service.api.routes import routers

EXPECTED = {
    ("POST", "/projects"), ("GET", "/projects"), ("GET", "/projects/{project}"),
    ("POST", "/projects/{project}/items"), ("GET", "/projects/{project}/items"),
    ("POST", "/projects/{project}/items/requeue"),
    ("GET", "/projects/{project}/items/{external_id}"), ("GET", "/projects/{project}/labels"),
    ("POST", "/projects/{project}/items/upload"), ("GET", "/projects/{project}/items/{external_id}/thumbnail"),
    ("POST", "/projects/{project}/items/{external_id}/correction"),
    ("GET", "/projects/{project}/events"),
    ("POST", "/projects/{project}/reviews/claim"), ("GET", "/projects/{project}/reviews"),
    ("POST", "/reviews/{task}/heartbeat"), ("POST", "/reviews/{task}/submit"), ("POST", "/reviews/{task}/skip"),
    ("POST", "/reviews/{task}/release"),
    ("GET", "/projects/{project}/policies"), ("POST", "/projects/{project}/policies"),
    ("GET", "/projects/{project}/policies/{version}"), ("POST", "/projects/{project}/policies/{version}/backtest"),
    ("GET", "/projects/{project}/policies/{version}/backtests"), ("GET", "/projects/{project}/backtests/{backtest}"),
    ("POST", "/projects/{project}/policies/{version}/activate"), ("POST", "/projects/{project}/policies/rollback"),
    ("GET", "/projects/{project}/audit"), ("GET", "/projects/{project}/metrics"), ("GET", "/metrics"),
    ("GET", "/projects/{project}/metrics/calibration"), ("GET", "/projects/{project}/metrics/precision"),
    ("GET", "/projects/{project}/metrics/tools"),
    ("GET", "/projects/{project}/demo"), ("POST", "/projects/{project}/demo/reviewer"),
    ("GET", "/health"),
    ("POST", "/projects/{project}/label-studio/import"), ("GET", "/projects/{project}/label-studio/export"),
    ("POST", "/label-studio/{project}/predict"), ("POST", "/label-studio/{project}/setup"),
    ("GET", "/label-studio/{project}/health"), ("POST", "/label-studio/{project}/webhook"),
    ("GET", "/label-studio/{project}/versions"), ("POST", "/label-studio/{project}/train"),
}
WEB_PAGES = {("GET", "/ui"), ("GET", "/ui/review"), ("GET", "/ui/operator")}  # HTML, left out of the schema
NO_BODY = {"GET"}


def openapi_path(path: str) -> str:
    return path.replace("{external_id:path}", "{external_id}")


def test_schema_lists_every_route_with_models(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]
    listed = {(method.upper(), path) for path, ops in spec["paths"].items() for method in ops}
    routes = {(m, openapi_path(r.path)) for router in routers for r in router.routes if isinstance(r, APIRoute)
              for m in r.methods}
    assert routes - WEB_PAGES == listed == EXPECTED
    assert routes & WEB_PAGES == WEB_PAGES
    for path, ops in spec["paths"].items():
        for method, op in ops.items():
            where = f"{method.upper()} {path}"
            assert op.get("summary"), where
            ok = next(op["responses"][s] for s in ("200", "201") if s in op["responses"])
            content = ok["content"]
            assert content, where
            for media in content.values():
                schema = media.get("schema") or media.get("itemSchema")
                assert schema, where
                ref = schema.get("$ref") or schema.get("items", {}).get("$ref")
                if ref:
                    assert ref.rsplit("/", 1)[1] in schemas, where
            if method.upper() in NO_BODY:
                assert "requestBody" not in op, where
            elif "requestBody" in op:
                media_types = op["requestBody"]["content"]
                body = (media_types.get("application/json") or media_types["multipart/form-data"])["schema"]
                refs = [body.get("$ref")] + [s.get("$ref") for s in body.get("anyOf", [])]
                assert any(r and r.rsplit("/", 1)[1] in schemas for r in refs), where
            for status in ("404", "409"):
                if status in op["responses"]:
                    assert op["responses"][status]["content"]["application/json"]["schema"] == {
                        "$ref": "#/components/schemas/ErrorBody"}, where
    posts_without_body = {p for p, ops in spec["paths"].items() if "post" in ops and "requestBody" not in ops["post"]}
    assert posts_without_body == set()
    for name in ("ProjectCreateRequest", "IngestRequest", "SubmitRequest", "PolicyCreateRequest"):
        assert schemas[name]["additionalProperties"] is False, name
    claim = spec["paths"]["/projects/{project}/reviews/claim"]["post"]["responses"]
    assert set(claim) >= {"200", "204", "404"}
    events = spec["paths"]["/projects/{project}/events"]["get"]["responses"]["200"]["content"]["text/event-stream"]
    assert events["itemSchema"]["properties"]["data"]["contentSchema"] == {"$ref": "#/components/schemas/LabelRecord"}


def test_docs_page(store) -> None:  # type: ignore[no-untyped-def]
    from service.api.app import create_app

    with TestClient(create_app(store.settings.model_copy(update={"docs_enabled": True}), store=store)) as on:
        response = on.get("/docs")
        assert response.status_code == 200
        assert "swagger-ui" in response.text.lower()
    with TestClient(create_app(store.settings, store=store)) as off:  # the default: no page loading a CDN's scripts
        assert off.get("/docs").status_code == 404 and off.get("/redoc").status_code == 404
        assert off.get("/openapi.json").status_code == 200
