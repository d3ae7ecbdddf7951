"""Image decode budgets (finding 4 of issue 17): a call's images share a pixel budget checked from the headers before
any pixel is decoded; image_url calls have a URL-count cap and one deadline for all their fetches; thumbnails are
made by reduced decoding."""

from __future__ import annotations

import base64
import time
from http.server import BaseHTTPRequestHandler

from fastapi.testclient import TestClient
from PIL import Image

from service.store import SqlStore
from tests.image_files import encode, png
from tests.service.api.conftest import error_message
from tests.tools.test_fetch import Server
from tools.images import thumbnail


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def test_a_calls_images_share_a_pixel_budget(client: TestClient, store: SqlStore, project: str) -> None:
    store.settings = store.settings.model_copy(update={"max_call_pixels": 30_000})
    items = [{"external_id": f"p{i}", "data": {"image_base64": b64(png(100, 100))}} for i in range(4)]
    response = client.post(f"/projects/{project}/items", json={"items": items})
    assert response.status_code == 422
    assert "items[3] (external_id 'p3')" in error_message(response) and "max_call_pixels" in error_message(response)
    assert sum(store.items.count_items(project).values()) == 0
    assert client.post(f"/projects/{project}/items", json={"items": items[:3]}).status_code == 200


def test_image_urls_have_a_count_cap_and_one_deadline_per_call(client: TestClient, store: SqlStore,
                                                               project: str) -> None:
    def never(handler: BaseHTTPRequestHandler) -> None:
        server.release.wait(120)  # a URL that never answers (until the test ends)

    with Server(never) as server:
        store.settings = store.settings.model_copy(update={
            "fetch_allow_hosts": [server.netloc], "max_image_urls": 4, "fetch_call_seconds": 2.0,
            "fetch_timeout_seconds": 60.0})
        url = f"http://{server.netloc}/x.png"
        many = [{"external_id": f"u{i}", "data": {"image_url": url}} for i in range(5)]
        response = client.post(f"/projects/{project}/items", json={"items": many})
        assert response.status_code == 422 and "max_image_urls" in error_message(response)
        assert server.hits == 0  # refused before any fetch
        started = time.monotonic()
        response = client.post(f"/projects/{project}/items", json={"items": many[:4]})
        elapsed = time.monotonic() - started
        assert response.status_code == 422 and "took longer than 2s together" in error_message(response)
        assert elapsed < 50, elapsed  # the call's deadline, not each URL's 60 s timeout


def test_thumbnails_of_large_images_are_reduced_first() -> None:
    image = Image.open(__import__("io").BytesIO(encode(Image.new("RGBA", (2048, 1024), (1, 2, 3, 255)))))
    image.load()
    small = Image.open(__import__("io").BytesIO(thumbnail(image)))
    assert max(small.size) == 256 and small.size == (256, 128)
