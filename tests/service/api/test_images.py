"""Images over the API: base64 and image_url in JSON ingest, multipart upload, validation before anything is stored
(bombs, truncated files, non-images, empty files: the whole call is a 422 naming the item), EXIF metadata,
thumbnails and their URLs in item status and review claims."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import pytest
from fastapi.testclient import TestClient
from PIL import Image

from service.store import SqlStore
from tests.factories import make_batch_result
from tests.image_files import noisy_jpeg, photo_with_exif, png, png_claiming
from tests.service.api.conftest import error_message
from tests.tools.test_fetch import Server, ok

FORMATS = "PNG, JPEG, GIF, WEBP, BMP, TIFF"


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def stored(store: SqlStore, project: str) -> int:
    return sum(store.items.count_items(project).values())


def test_base64_image_is_stored_apart_with_exif_metadata_and_a_thumbnail(
    client: TestClient, store: SqlStore, project: str
) -> None:
    photo = photo_with_exif()
    body = {
        "items": [
            {"external_id": "photo", "data": {"image_base64": b64(photo), "metadata": {"camera": "phone"}}},
            {
                "external_id": "mine",
                "data": {
                    "image_base64": "data:image/jpeg;base64," + b64(photo),
                    "metadata": {"time": "2020-01-01T00:00:00", "lat": 1.5},
                },
            },
            {"external_id": "text", "data": {"text": "no image here"}},
        ]
    }
    response = client.post(f"/projects/{project}/items", json=body)
    assert response.status_code == 200, response.text
    assert response.json() == {"inserted": ["photo", "mine", "text"], "duplicates": []}
    # EXIF DateTimeOriginal and GPS become time, lat, lon (decimal degrees; W is negative) ...
    assert store.items.item_view(project, "photo").item.meta == {
        "camera": "phone",
        "time": "2021-08-29T16:55:00",
        "lat": pytest.approx(29.95),
        "lon": pytest.approx(-90.075),
    }
    # ... unless the client sent them (lat and lon go together)
    assert store.items.item_view(project, "mine").item.meta == {"time": "2020-01-01T00:00:00", "lat": 1.5}
    # the worker's claim carries the bytes as sent
    _, items = store.items.claim_batch(project, worker="w", size=10)
    assert {it.key: it.image for it in items} == {"photo": photo, "mine": photo, "text": None}

    status = client.get(f"/projects/{project}/items/photo").json()
    assert status["thumbnail_url"] == f"/projects/{project}/items/photo/thumbnail"
    assert client.get(f"/projects/{project}/items/text").json()["thumbnail_url"] is None
    thumb = client.get(status["thumbnail_url"])
    assert thumb.status_code == 200 and thumb.headers["content-type"] == "image/jpeg"
    image = Image.open(io.BytesIO(thumb.content))
    assert image.size == (192, 256)  # 640 x 480 stored, orientation 6: shown upright as 480 x 640, then <= 256
    r, g, b = image.convert("RGB").getpixel((96, 10))  # the red band of the stored left edge is now on top
    assert r > 150 and g < 80 and b < 80
    missing = client.get(f"/projects/{project}/items/text/thumbnail")
    assert (missing.status_code, error_message(missing)) == (404, "item 'text' has no image")
    unknown = client.get(f"/projects/{project}/items/nope/thumbnail")
    assert (unknown.status_code, error_message(unknown)) == (404, f"item 'nope' does not exist in project {project!r}")


def test_multipart_upload_is_idempotent_by_external_id(client: TestClient, store: SqlStore, project: str) -> None:
    url = f"/projects/{project}/items/upload"
    files = [("file", ("a.png", png(), "image/png")), ("file", ("b.jpg", photo_with_exif(), "image/jpeg"))]
    form = {"external_id": ["a", "b"], "metadata": ['{"site": 1}', ""]}
    response = client.post(url, files=files, data=form)
    assert response.status_code == 200, response.text
    assert response.json() == {"inserted": ["a", "b"], "duplicates": []}
    assert store.items.item_view(project, "a").item.meta == {"site": 1}
    assert store.items.item_view(project, "b").item.meta["time"] == "2021-08-29T16:55:00"
    again = client.post(url, files=files[:1], data={"external_id": "a"})
    assert again.json() == {"inserted": [], "duplicates": ["a"]}
    assert stored(store, project) == 2
    thumb = client.get(f"/projects/{project}/items/a/thumbnail")
    assert thumb.headers["content-type"] == "image/png"  # tiny images stay PNG
    assert Image.open(io.BytesIO(thumb.content)).size == (32, 24)

    cases = [
        (
            {"external_id": ["x"]},
            files,
            "2 files and 1 external_id fields: send one external_id per file, in the same order",
        ),
        (
            {"external_id": ["x", "y"], "metadata": ["{}"]},
            files,
            "2 files and 1 metadata fields: send one metadata JSON object per file (or none at all), in the same order",
        ),
        (
            {"external_id": ["x"], "metadata": ["[1]"]},
            files[:1],
            "file[0] 'a.png' (external_id 'x'): metadata must be a JSON object, not list",
        ),
        (
            {"external_id": ["x"], "metadata": ["{oops"]},
            files[:1],
            "file[0] 'a.png' (external_id 'x'): metadata is not valid JSON (Expecting property name enclosed in double "
            "quotes: line 1 column 2 (char 1))",
        ),
    ]
    for form, parts, message in cases:
        response = client.post(url, files=parts, data=form)
        assert (response.status_code, error_message(response)) == (422, message)
    assert stored(store, project) == 2


BAD = [  # (file name, bytes, the reason: the whole message, or its start when it ends with "...")
    (
        "bomb.png",
        png_claiming(20_000, 20_000),
        "image claims 400000000 pixels; the limit is 40000000 pixels (possible decompression bomb)",
    ),
    ("cut.jpg", noisy_jpeg()[:3000], "image data is truncated or corrupt (image file is truncated (..."),
    (
        "notes.png",
        b"these are my notes, not a picture\n",
        f"not an image, or not one of the allowed formats ({FORMATS})",
    ),
    ("empty.png", b"", "image is empty (0 bytes)"),
]


def matches(message: str, expected: str) -> bool:
    return message.startswith(expected[:-3]) if expected.endswith("...") else message == expected


@pytest.mark.parametrize(("name", "data", "reason"), BAD, ids=[b[0] for b in BAD])
def test_bad_files_refuse_the_whole_batch(
    client: TestClient, store: SqlStore, project: str, name: str, data: bytes, reason: str
) -> None:
    if name == "bomb.png":
        assert len(data) < 1024
    files = [("file", ("good.png", png(), "image/png")), ("file", (name, data, "image/png"))]
    response = client.post(f"/projects/{project}/items/upload", files=files, data={"external_id": ["good", "bad"]})
    assert response.status_code == 422
    assert matches(error_message(response), f"file[1] {name!r} (external_id 'bad'): {reason}"), error_message(response)
    assert stored(store, project) == 0  # the good file of the batch is not stored either

    body = {
        "items": [
            {"external_id": "good", "data": {"image_base64": b64(png())}},
            {"external_id": "bad", "data": {"image_base64": b64(data) or " "}},
        ]
    }
    response = client.post(f"/projects/{project}/items", json=body)
    assert response.status_code == 422
    assert matches(error_message(response), f"items[1] (external_id 'bad'): {reason}"), error_message(response)
    assert stored(store, project) == 0


def test_image_limits_are_settings(client: TestClient, store: SqlStore, project: str) -> None:
    store.settings = store.settings.model_copy(
        update={"max_image_pixels": 1000, "max_image_bytes": 5000, "image_formats": ["PNG"]}
    )
    cases = [
        (
            png(40, 30),
            "items[0] (external_id 'k'): image claims 40 x 30 pixels; the limit is 1000 pixels (possible "
            "decompression bomb)",
        ),
        (noisy_jpeg(20, 20), "items[0] (external_id 'k'): not an image, or not one of the allowed formats (PNG)"),
        (noisy_jpeg(400, 400, quality=95), None),
        ("not base64!", "items[0] (external_id 'k'): image_base64 is not valid base64 (Only base64 data is allowed)"),
    ]
    for data, message in cases:
        if message is None:
            assert isinstance(data, bytes)
            message = f"items[0] (external_id 'k'): image is {len(data)} bytes; the limit is 5000"
        payload = b64(data) if isinstance(data, bytes) else data
        response = client.post(
            f"/projects/{project}/items", json={"items": [{"external_id": "k", "data": {"image_base64": payload}}]}
        )
        assert (response.status_code, error_message(response)) == (422, message)
    big = client.post(
        f"/projects/{project}/items/upload",
        files=[("file", ("big.jpg", noisy_jpeg(400, 400), "x"))],
        data={"external_id": "big"},
    )
    assert (
        error_message(big) == "file[0] 'big.jpg' (external_id 'big'): the file is larger than the limit of 5000 bytes"
    )
    both = client.post(
        f"/projects/{project}/items",
        json={
            "items": [
                {"external_id": "k", "data": {"image_base64": b64(png()), "image_url": "http://example.com/a.png"}}
            ]
        },
    )
    assert (
        both.status_code == 422
        and both.json()["detail"][0]["msg"] == "Value error, give image_base64 or image_url, not both"
    )
    assert stored(store, project) == 0


@pytest.fixture
def image_server() -> Iterator[Server]:
    photo = photo_with_exif()

    def respond(h: BaseHTTPRequestHandler) -> None:
        if h.path == "/photo.jpg":
            ok(photo)(h)
        elif h.path == "/moved":
            h.send_response(302)
            h.send_header("Location", "/photo.jpg")
            h.send_header("Content-Length", "0")
            h.end_headers()
        elif h.path == "/notes.png":
            ok(b"not a picture")(h)
        else:
            h.send_response(404)
            h.send_header("Content-Length", "0")
            h.end_headers()

    with Server(respond) as server:
        yield server


def test_image_url_is_fetched_safely_and_validated(
    client: TestClient, store: SqlStore, project: str, image_server: Server
) -> None:
    base = f"http://{image_server.netloc}"
    url = f"/projects/{project}/items"

    def one(key: str, path: str):  # type: ignore[no-untyped-def]
        return client.post(url, json={"items": [{"external_id": key, "data": {"image_url": base + path}}]})

    refused = one("u", "/photo.jpg")  # loopback is refused unless allowed
    assert (refused.status_code, error_message(refused)) == (
        422,
        f"items[0] (external_id 'u'): image_url cannot be used: fetch: http://127.0.0.1:{image_server.port} "
        "refused: resolves to a loopback address 127.0.0.1",
    )
    assert image_server.hits == 0
    store.settings = store.settings.model_copy(update={"fetch_allow_hosts": [image_server.netloc]})
    fetched = one("u", "/moved")
    assert fetched.json() == {"inserted": ["u"], "duplicates": []}
    assert store.items.item_view(project, "u").item.meta["lat"] == pytest.approx(29.95)
    assert client.get(f"/projects/{project}/items/u/thumbnail").status_code == 200
    for path, why in (
        ("/gone.png", f"fetch: {base}/gone.png answered HTTP 404, not 200"),
        ("/notes.png", f"not an image, or not one of the allowed formats ({FORMATS})"),
    ):
        response = one("v", path)
        assert (response.status_code, error_message(response)) == (
            422,
            "items[0] (external_id 'v'): " + (f"image_url cannot be used: {why}" if "fetch" in why else why),
        )
    assert stored(store, project) == 1


def test_review_claims_link_the_thumbnail(client: TestClient, store: SqlStore, project: str) -> None:
    from tools.base import Item

    store.items.ingest(project, [Item(key="pic/1", image=png(600, 300)), Item(key="plain",
                                                                              text="hi")])  # no thumbnail yet
    token, claimed = store.items.claim_batch(project, worker="t", size=2)
    store.items.record_batch(project, make_batch_result(store.projects.active_policy(project), claimed, "escalate"),
                             token)
    seen = {}
    for _ in range(2):
        task = client.post(f"/projects/{project}/reviews/claim", json={"reviewer": "ann"}).json()
        seen[task["item"]["external_id"]] = task["item"]["thumbnail_url"]
    assert seen == {"pic/1": f"/projects/{project}/items/pic%2F1/thumbnail", "plain": None}
    thumb = client.get(seen["pic/1"])  # made on first request, then kept
    assert thumb.status_code == 200 and Image.open(io.BytesIO(thumb.content)).size == (256, 128)
    found = store.items.item_image(project, "pic/1")
    assert found is not None and found[2] == thumb.content


def test_the_formats_setting_names_pillow_formats(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from service.settings import Settings, image_limits

    monkeypatch.setenv("LABELAGENT_IMAGE_FORMATS", '["png", "webp"]')
    monkeypatch.setenv("LABELAGENT_MAX_IMAGE_PIXELS", "1000000")
    limits = image_limits(Settings())
    assert (limits.formats, limits.max_pixels) == (("PNG", "WEBP"), 1_000_000)
    with pytest.raises(ValidationError, match="JPG: not image formats Pillow can open"):
        Settings(image_formats=["JPG"])
