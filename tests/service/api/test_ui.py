"""The web pages over HTTP (their behaviour is tested in a browser under ``tests/web``): served without a key, under
a Content-Security-Policy that allows only the app's origin, and with every asset served by the app itself."""

from __future__ import annotations

import re

import pytest
from fastapi.testclient import TestClient

from service.api.web import CONTENT_SECURITY_POLICY, STATIC_DIR

ASSET = re.compile(r'(?:src|href)="([^"]+)"')


@pytest.mark.parametrize("page", ["/ui/review", "/ui/operator"])
def test_pages_are_public_and_locked_to_self(anonymous: TestClient, page: str) -> None:
    r = anonymous.get(page)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    csp = r.headers["content-security-policy"]
    assert csp == CONTENT_SECURITY_POLICY
    assert "default-src 'self'" in csp and "script-src 'self';" in csp and "unsafe" not in csp
    assert r.headers["x-content-type-options"] == "nosniff"
    assets = ASSET.findall(r.text)
    assert any(a.endswith(".js") for a in assets) and any(a.endswith(".css") for a in assets)
    for asset in assets:
        assert asset.startswith("/ui/"), f"{page} loads {asset} from elsewhere"
        got = anonymous.get(asset)
        assert got.status_code == 200, asset
        assert got.headers["content-security-policy"] == CONTENT_SECURITY_POLICY


def test_no_asset_names_another_origin_or_inline_code() -> None:
    for path in STATIC_DIR.iterdir():
        text = path.read_text()
        urls = set(re.findall(r"https?://[^\s\"'`)]+", text)) - {"http://www.w3.org/2000/svg"}
        assert not urls, (path.name, urls)
        assert "innerHTML" not in text and "insertAdjacentHTML" not in text and "eval(" not in text, path.name
        if path.suffix == ".html":
            assert "<script>" not in text and "style=" not in text and not re.search(r"\son[a-z]+=", text), path.name


def test_api_responses_keep_their_headers(anonymous: TestClient) -> None:
    r = anonymous.get("/health")
    assert r.status_code == 200 and "content-security-policy" not in r.headers
    assert anonymous.get("/ui", follow_redirects=False).headers["location"] == "/ui/review"
