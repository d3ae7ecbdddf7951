"""Item images at ingest (from base64, an ``image_url`` or a multipart upload) and reviewer thumbnails.

Every image of a call is obtained and validated before anything is stored: bytes under ``max_image_bytes``, a format
of ``image_formats``, at most ``max_image_pixels`` pixels (read from the header, before any pixel is decoded: a
decompression bomb costs nothing), and a file that decodes completely (truncated and corrupt files are refused).
One bad image fails the whole call with a 422 whose message names the item (index and external id) and the reason;
nothing of the call is stored. Image URLs are fetched with the SSRF-safe fetcher (``fetch_*`` settings); a refused
or failed fetch is a 422 too. EXIF ``DateTimeOriginal`` and GPS become the metadata ``time``, ``lat`` and ``lon``
unless the client sent them.
"""

from __future__ import annotations

import asyncio
import atexit
import base64
import binascii
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any
from urllib.parse import quote

import httpx

from policies import InputError, NotFoundError, ToolError
from service.api.ops import fetch_loop
from service.settings import Settings, image_limits, tool_environment
from service.store import SqlStore
from tools.fetch import fetch_url
from tools.image_pool import DecodePool
from tools.images import ImageLimits, open_image, thumbnail_media_type

FETCH_CONCURRENCY = 8
DECODE_CONCURRENCY = 2  # images decoded at once (in child processes), whatever the number of request threads
# the decoder processes, started on first use: a bound on memory and CPU, not a registry (holds no data)
_decoder = DecodePool(DECODE_CONCURRENCY)
atexit.register(_decoder.close)
_decode_threads = ThreadPoolExecutor(DECODE_CONCURRENCY, thread_name_prefix="labelagent-decode")  # they wait on it


@dataclass(slots=True)
class ImageSource:
    """Where one item's image comes from: bytes (uploaded or base64-decoded) or a URL to fetch."""

    where: str  # how the error messages name the item, e.g. "items[3] (external_id 'x')"
    data: bytes | None = None
    url: str | None = None


@dataclass(slots=True)
class CheckedImage:
    data: bytes
    thumbnail: bytes
    metadata: dict[str, Any] = field(default_factory=dict)  # from EXIF: time, lat, lon


def decode_base64(text: str, where: str) -> bytes:
    """The bytes of ``image_base64`` (standard alphabet; whitespace and a ``data:...;base64,`` prefix allowed)."""
    if text.startswith("data:") and ";base64," in text[:100]:
        text = text.split(",", 1)[1]
    try:
        return base64.b64decode("".join(text.split()), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InputError(f"{where}: image_base64 is not valid base64 ({exc})") from None


def check_image(data: bytes, limits: ImageLimits, where: str) -> CheckedImage:
    """Validate one image (see the module doc) and make its thumbnail; InputError naming ``where`` and why. Decoded
    in one of ``DECODE_CONCURRENCY`` child processes (the rest wait; see :mod:`tools.image_pool`), so neither the
    memory nor the CPU of a decode lands on the request threads."""
    try:
        small, metadata = _decoder.check(data, limits)
    except InputError as exc:
        raise InputError(f"{where}: {exc}") from None
    return CheckedImage(data=data, thumbnail=small, metadata=metadata)


def check_call_pixels(images: Sequence[tuple[str, bytes]], limits: ImageLimits, budget: int) -> None:
    """InputError when the images of one call claim more than ``budget`` pixels together (headers only)."""
    total = 0
    for where, data in images:
        try:
            width, height = open_image(data, limits).size
        except InputError as exc:
            raise InputError(f"{where}: {exc}") from None
        total += width * height
        if total > budget:
            raise InputError(f"{where}: the images of this call have more than {budget} pixels together "
                             "(max_call_pixels); send fewer or smaller images per call")


def with_exif(metadata: dict[str, Any], exif: dict[str, Any]) -> dict[str, Any]:
    """``metadata`` plus the EXIF ``time`` and ``lat``/``lon`` the client did not send (lat and lon go together)."""
    out = dict(metadata)
    if "time" in exif and "time" not in out:
        out["time"] = exif["time"]
    if "lat" in exif and "lat" not in out and "lon" not in out:
        out["lat"], out["lon"] = exif["lat"], exif["lon"]
    return out


async def _fetch_all(urls: Sequence[tuple[int, str]], settings: Settings) -> dict[int, bytes | str]:
    """Each URL's body, or why it could not be used (by position); every fetch of the call within
    ``fetch_call_seconds`` together."""
    env = tool_environment(settings)
    limits = replace(env.fetch_limits, max_bytes=min(env.fetch_limits.max_bytes, settings.max_image_bytes))
    gate = asyncio.Semaphore(FETCH_CONCURRENCY)
    out: dict[int, bytes | str] = {}

    async def one(client: httpx.AsyncClient, index: int, url: str) -> None:
        async with gate:
            try:
                result = await fetch_url(url, client=client, limits=limits, allow=env.fetch_allow_hosts)
            except ToolError as exc:
                out[index] = str(exc)
                return
        out[index] = (
            result.content
            if result.status_code == 200
            else f"fetch: {result.url} answered HTTP {result.status_code}, not 200"
        )

    async with httpx.AsyncClient(trust_env=False) as client:
        try:
            async with asyncio.timeout(settings.fetch_call_seconds):
                await asyncio.gather(*(one(client, i, url) for i, url in urls))
        except TimeoutError:
            late = f"fetch: the call's image URLs took longer than {settings.fetch_call_seconds:g}s together"
            for i, _ in urls:
                out.setdefault(i, late)
    return out


def _urls(sources: Sequence[ImageSource | None], settings: Settings) -> list[tuple[int, str]]:
    urls = [(i, s.url) for i, s in enumerate(sources) if s is not None and s.url is not None]
    if len(urls) > settings.max_image_urls:
        raise InputError(f"{len(urls)} items with image_url in one call; at most {settings.max_image_urls} are "
                         "fetched per call (max_image_urls): send the rest in further calls")
    return urls


def _datas(sources: Sequence[ImageSource | None], fetched: dict[int, bytes | str],
           limits: ImageLimits, settings: Settings) -> list[tuple[str, bytes]]:
    """(where, bytes) of every image, the call's pixel budget checked from the headers before any pixel is decoded."""
    datas: list[tuple[str, bytes]] = []
    for i, source in enumerate(sources):
        if source is not None:
            got = fetched.get(i) if source.url is not None else source.data
            if isinstance(got, str):
                raise InputError(f"{source.where}: image_url cannot be used: {got}")
            datas.append((source.where, got or b""))
    check_call_pixels(datas, limits, settings.max_call_pixels)
    return datas


def load_images(sources: Sequence[ImageSource | None], settings: Settings) -> list[CheckedImage | None]:
    """Fetch the URLs, then validate every image, aligned with ``sources``; the first problem (in input order) is
    an InputError naming its item. Blocks its thread while the URLs are fetched on the process's fetch loop
    (:mod:`service.api.ops.fetch_loop`) and the images decoded in the decoder processes (multipart uploads use it)."""
    urls = _urls(sources, settings)
    fetched = fetch_loop.run(_fetch_all(urls, settings)) if urls else {}
    limits = image_limits(settings)
    checked = iter([check_image(data, limits, where) for where, data in _datas(sources, fetched, limits, settings)])
    return [None if source is None else next(checked) for source in sources]


async def load_images_async(sources: Sequence[ImageSource | None], settings: Settings) -> list[CheckedImage | None]:
    """:func:`load_images` without holding a request thread while it waits (JSON ingest uses it): the URLs are
    fetched on the fetch loop, the images decoded by the decoder processes through ``DECODE_CONCURRENCY`` threads of
    their own, so a call that waits for slow URLs or for a decoder takes nothing from the other routes."""
    urls = _urls(sources, settings)
    fetched = await fetch_loop.run_async(_fetch_all(urls, settings)) if urls else {}
    limits = image_limits(settings)
    loop = asyncio.get_running_loop()
    checked = iter([await loop.run_in_executor(_decode_threads, check_image, data, limits, where)
                    for where, data in _datas(sources, fetched, limits, settings)])
    return [None if source is None else next(checked) for source in sources]


def thumbnail_url(project: str, external_id: str) -> str:
    return f"/projects/{project}/items/{quote(external_id, safe='')}/thumbnail"


def item_thumbnail(*, store: SqlStore, project: str, external_id: str) -> tuple[bytes, str]:
    """(thumbnail bytes, media type) of an item's image, made and kept on first request when ingest made none;
    NotFoundError when the item does not exist or has no image, InputError when its stored bytes are refused."""
    found = store.items.item_image(project, external_id)
    if found is None:
        raise NotFoundError(f"item {external_id!r} has no image")
    item_id, data, thumb = found
    if thumb is None:
        thumb = check_image(data, image_limits(store.settings), f"item {external_id!r}").thumbnail
        store.items.save_thumbnail(project, item_id, thumb)
    return thumb, thumbnail_media_type(thumb)
