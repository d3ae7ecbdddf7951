"""Multipart upload of image files as items: ``file`` parts with an ``external_id`` each (and optional ``metadata``
JSON objects), validated like JSON ingest (see :mod:`service.api.ops.images`): one bad file refuses the whole upload."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import IO, Any

from policies import InputError
from service.api.ops.images import ImageSource, load_images
from service.api.ops.items import check_batch, store_items
from service.api.schemas.common import json_safe
from service.api.schemas.items import IngestResponse
from service.runtime.feedback import FeedbackSink
from service.store import SqlStore


def read_capped(stream: IO[bytes], limit: int) -> bytes:
    """At most ``limit + 1`` bytes of ``stream``: enough to tell a file over the limit without reading it all."""
    return stream.read(limit + 1)


def _metadata(text: str, where: str) -> dict[str, Any]:
    try:
        value = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as exc:
        raise InputError(f"{where}: metadata is not valid JSON ({exc})") from None
    if not isinstance(value, dict):
        raise InputError(f"{where}: metadata must be a JSON object, not {type(value).__name__}")
    try:
        return json_safe(value)
    except ValueError as exc:
        raise InputError(f"{where}: metadata {exc}") from None


def upload_items(
    *,
    store: SqlStore,
    feedback: FeedbackSink,
    project: str,
    files: Sequence[tuple[str, bytes]],
    external_ids: Sequence[str],
    metadata: Sequence[str] | None,
) -> IngestResponse:
    """Store one item per uploaded file (``files``: (file name, bytes)), idempotent by external id."""
    settings = store.settings
    if len(external_ids) != len(files):
        raise InputError(
            f"{len(files)} files and {len(external_ids)} external_id fields: send one external_id per "
            "file, in the same order"
        )
    if metadata is not None and len(metadata) != len(files):
        raise InputError(
            f"{len(files)} files and {len(metadata)} metadata fields: send one metadata JSON object "
            "per file (or none at all), in the same order"
        )
    check_batch(store=store, project=project, n=len(files))
    sources: list[ImageSource | None] = []
    metas: list[dict[str, Any]] = []
    for i, ((name, data), key) in enumerate(zip(files, external_ids, strict=True)):
        where = f"file[{i}] {name!r} (external_id {key!r})"
        if not key or len(key) > settings.max_external_id_length or "\x00" in key:
            raise InputError(
                f"{where}: external_id must be 1 to {settings.max_external_id_length} characters without NUL"
            )
        if len(data) > settings.max_image_bytes:  # read_capped stopped one byte past the limit
            raise InputError(f"{where}: the file is larger than the limit of {settings.max_image_bytes} bytes")
        metas.append(_metadata(metadata[i], where) if metadata is not None else {})
        sources.append(ImageSource(where, data=data))
    images = load_images(sources, settings)
    return store_items(
        store=store,
        feedback=feedback,
        project=project,
        keys=list(external_ids),
        texts=[None] * len(files),
        metadata=metas,
        images=images,
        labels=[None] * len(files),
    )
