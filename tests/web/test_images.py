"""The reviewer page shows an image item's thumbnail (fetched with the reviewer's key, shown from memory under the
page's CSP). Runs where the app ingests images (``image_base64`` in the item schema); skipped otherwise."""

from __future__ import annotations

import base64
import re
import struct
import zlib

import pytest
from playwright.sync_api import expect

from service.api.schemas.items import ItemData
from tests.web.conftest import Live
from tests.web.seed import decide_pending
from tests.web.test_reviewer import current_task, sign_in_with_keyboard


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A plain-colour PNG, written by hand."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    rows = b"".join(b"\x00" + bytes(rgb) * width for _ in range(height))
    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b"")


def test_an_image_item_shows_its_thumbnail(live: Live, new_page) -> None:  # type: ignore[no-untyped-def]
    if "image_base64" not in ItemData.model_fields:
        pytest.skip("this build does not ingest images (no image_base64 in the item schema)")
    project = live.project("img")
    item = {
        "external_id": "img-0000",
        "data": {"text": "a red square", "image_base64": base64.b64encode(png(64, 48, (200, 30, 30))).decode()},
    }
    with live.api(live.admin) as api:
        r = api.post(f"/projects/{project}/items", json={"items": [item]})
    assert r.status_code == 200, r.text
    decide_pending(live.store, project, ["escalate"], {"img-0000": "spam"})
    page, problems = new_page()
    sign_in_with_keyboard(page, live, live.key("reviewer", project), "ivy")
    assert current_task(page) is not None
    thumbnail = page.locator("#thumbnail")
    expect(thumbnail).to_be_visible()
    # the page fetches the thumbnail, then shows it from a blob: waited for (a loaded machine), never assumed done
    expect(thumbnail).to_have_attribute("src", re.compile(r"^blob:"), timeout=30_000)
    page.wait_for_function("() => document.querySelector('#thumbnail').complete", timeout=30_000)
    assert page.evaluate("() => document.querySelector('#thumbnail').naturalWidth") > 0
    problems.assert_clean()
