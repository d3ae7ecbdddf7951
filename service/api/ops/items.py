"""Ingest, an item's client-facing state, correcting its label, re-queueing failed items."""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from collections.abc import Sequence
from typing import Any

from starlette.concurrency import run_in_threadpool

from agent.ports import CALIBRATION_KINDS
from policies import ConflictError, InputError
from service.api.ops import tell
from service.api.ops.images import (
    CheckedImage,
    ImageSource,
    decode_base64,
    load_images,
    load_images_async,
    thumbnail_url,
    with_exif,
)
from service.api.schemas.items import (
    CorrectedFrom,
    CorrectionResponse,
    IngestRequest,
    IngestResponse,
    ItemIn,
    ItemPage,
    ItemStatusOut,
    ItemSummaryOut,
    RequeueResponse,
    VoteOut,
    check_item_text,
)
from service.runtime.feedback import FeedbackSink
from service.store import SqlStore
from tools.base import Item

# the store leases items to workers; for clients a leased item is still waiting for its label
CLIENT_STATUS = {"pending": "pending", "leased": "pending", "labeled": "labeled", "in_review": "in_review",
                 "failed": "failed"}


def check_text_lengths(items: Sequence[ItemIn], limit: int) -> None:
    for i, it in enumerate(items):
        check_item_text(it.data.text, limit, f"items[{i}].data.text")


def ingest_once(*, store: SqlStore, feedback: FeedbackSink, project: str, body: IngestRequest,
                key: str, images: Sequence[CheckedImage | None] | None = None) -> IngestResponse:
    """Ingest under an ``Idempotency-Key`` (reserved before anything is stored): the first answer is stored and
    returned to every retry with the same body; the same key with another body, or while the first request still
    runs, is a ConflictError that says which. ``images``: see :func:`ingest_items`."""
    digest = hashlib.sha256(json.dumps(body.model_dump(mode="json"), sort_keys=True).encode()).hexdigest()
    stored = store.projects.reserve_idempotent(project, key, digest)
    if stored is None:  # ours: run it and keep the answer
        try:
            answer = ingest_items(store=store, feedback=feedback, project=project, items=body.items, images=images)
        except BaseException:
            store.projects.drop_idempotent(project, key)
            raise
        store.projects.finish_idempotent(project, key, 200, answer.model_dump(mode="json"))
        return answer
    if stored[0] != digest:
        raise ConflictError(f"Idempotency-Key {key!r} was already used with a different request body; "
                            "send a new key for a new request")
    if stored[1] == 0:
        raise ConflictError(f"a request with Idempotency-Key {key!r} is still running; retry shortly for its answer")
    return IngestResponse.model_validate(stored[2])


def check_batch(*, store: SqlStore, project: str, n: int) -> None:
    """The call's size and its project, checked before costly image work (the store checks them again)."""
    if n > store.settings.max_batch_items:
        raise InputError(f"{n} items in one call; send at most {store.settings.max_batch_items} per call")
    store.projects.get_project(project)


def _source(i: int, it: ItemIn) -> ImageSource | None:
    where = f"items[{i}] (external_id {it.external_id!r})"
    if it.data.image_base64 is not None:
        return ImageSource(where, data=decode_base64(it.data.image_base64, where))
    if it.data.image_url is not None:
        return ImageSource(where, url=it.data.image_url)
    return None


def image_sources(*, store: SqlStore, project: str, items: Sequence[ItemIn]) -> list[ImageSource | None] | None:
    """Each item's image source (None when the call has no image), after the checks that cost nothing: text lengths,
    the call's size and its project, before any image is fetched or decoded."""
    check_text_lengths(items, store.settings.max_text_chars)
    sources = [_source(i, it) for i, it in enumerate(items)]
    if not any(s is not None for s in sources):
        return None
    check_batch(store=store, project=project, n=len(items))
    return sources


async def prepare_images(*, store: SqlStore, project: str,
                         items: Sequence[ItemIn]) -> list[CheckedImage | None] | None:
    """The call's checked images (None when it has none), fetched and decoded without holding a request thread
    (:func:`service.api.ops.images.load_images_async`); for :func:`ingest_items` / :func:`ingest_once`."""
    sources = await run_in_threadpool(lambda: image_sources(store=store, project=project, items=items))
    return None if sources is None else await load_images_async(sources, store.settings)


def ingest_items(*, store: SqlStore, feedback: FeedbackSink, project: str, items: Sequence[ItemIn],
                 images: Sequence[CheckedImage | None] | None = None) -> IngestResponse:
    """Store new items (idempotent by external id); says which were stored now and which were there already.
    Images are fetched and validated first (``images``: already done, by :func:`prepare_images`): one bad image
    refuses the whole call (nothing stored)."""
    if images is None:
        sources = image_sources(store=store, project=project, items=items)
        images = [None] * len(items) if sources is None else load_images(sources, store.settings)
    return store_items(store=store, feedback=feedback, project=project, keys=[it.external_id for it in items],
                       texts=[it.data.text for it in items], metadata=[dict(it.data.metadata) for it in items],
                       images=images, labels=[it.label for it in items])


def store_items(*, store: SqlStore, feedback: FeedbackSink, project: str, keys: Sequence[str],
                texts: Sequence[str | None], metadata: Sequence[dict[str, Any]], images: Sequence[CheckedImage | None],
                labels: Sequence[str | None]) -> IngestResponse:
    """Store checked items (aligned sequences); the answer names the stored and the duplicate external ids."""
    batch = [Item(key=key, text=text, metadata=meta if image is None else with_exif(meta, image.metadata),
                  image=None if image is None else image.data)
             for key, text, meta, image in zip(keys, texts, metadata, images, strict=True)]
    thumbnails = {key: image.thumbnail for key, image in zip(keys, images, strict=True) if image is not None}
    result = store.items.ingest(project, batch, labels=labels if any(lab is not None for lab in labels) else None,
                          thumbnails=thumbnails)
    occurrences = Counter(keys)
    duplicate_count = Counter(result.duplicates)
    inserted: list[str] = []
    duplicates: list[str] = []
    for key in dict.fromkeys(keys):
        # the store counts each repeat within the call once; every occurrence counted means it was stored before
        if duplicate_count[key] >= occurrences[key]:
            duplicates.append(key)
        else:
            inserted.append(key)
            if occurrences[key] > 1:  # stored once now, its repeats are duplicates
                duplicates.append(key)
    if inserted:
        tell(feedback, project)
    return IngestResponse(inserted=inserted, duplicates=duplicates)


def item_status(*, store: SqlStore, project: str, external_id: str) -> ItemStatusOut:
    view = store.items.item_view(project, external_id)
    item, label, fix = view.item, view.label, view.correction
    status = CLIENT_STATUS[item.status]
    hidden = status == "in_review" and view.review_kind in CALIBRATION_KINDS  # answered blind: no agent label
    return ItemStatusOut(
        external_id=item.external_id,
        status=status,  # type: ignore[arg-type]
        label=None if label is None else label.label,
        confidence=None if label is None else label.confidence,
        source=None if label is None else label.source,
        policy_version=view.policy_version,
        threshold=None if label is None else label.threshold,
        evidence=[] if hidden else [VoteOut(tool=v.tool, distribution=v.distribution, cost=v.cost, evidence=v.evidence,
                                            model_version=v.model_version) for v in view.votes],
        client_label=item.client_label,
        error=item.error,
        thumbnail_url=thumbnail_url(project, item.external_id) if view.has_image else None,
        created_at=item.created_at,
        updated_at=item.updated_at,
        corrected_from=None if fix is None else CorrectedFrom(
            label_id=fix.replaced_label_id, label=fix.replaced_label,
            source=fix.replaced_source,  # type: ignore[arg-type]
            confidence=fix.replaced_confidence, reviewer=fix.reviewer, note=fix.note, corrected_at=fix.created_at),
    )


STORED_STATUSES = {client: tuple(s for s, c in CLIENT_STATUS.items() if c == client)
                   for client in set(CLIENT_STATUS.values())}  # a client status -> the stored ones it covers


def list_items(*, store: SqlStore, project: str, statuses: Sequence[str] | None, after: int,
               limit: int) -> ItemPage:
    """A page of the project's items in arrival order, filtered by client status (``pending`` covers the items
    a worker holds too)."""
    stored = None if not statuses else sorted({s for c in statuses for s in STORED_STATUSES[c]})
    rows = store.items.list_items(project, statuses=stored, after_id=after, limit=limit + 1)
    more = len(rows) > limit
    rows = rows[:limit]
    return ItemPage(items=[ItemSummaryOut(external_id=r.external_id, status=CLIENT_STATUS[r.status],  # type: ignore[arg-type]
                                          label=r.label, source=r.source, confidence=r.confidence,
                                          policy_version=r.policy_version, client_label=r.client_label, error=r.error,
                                          created_at=r.created_at, updated_at=r.updated_at) for r in rows],
                    next_after=rows[-1].id if more else None)


def correct_item(*, store: SqlStore, feedback: FeedbackSink, project: str, external_id: str, label: str,
                 reviewer: str, note: str | None, actor: str) -> CorrectionResponse:
    """Replace the item's label with ``label`` (a human label, history kept; see ``service.store.corrections``) and
    tell the feedback sink, so the workers' learners train on it soon. The same label again changes nothing."""
    outcome = store.audit.correct_label(project, external_id, label, reviewer=reviewer, note=note, actor=actor)
    if outcome.correction is not None:
        tell(feedback, project)
    status = item_status(store=store, project=project, external_id=external_id)
    return CorrectionResponse(**status.model_dump(), changed=outcome.correction is not None)


def requeue_items(*, store: SqlStore, feedback: FeedbackSink, project: str, external_ids: Sequence[str] | None,
                  actor: str) -> RequeueResponse:
    done = store.audit.requeue_failed(project, keys=external_ids, actor=actor)
    if done:
        tell(feedback, project)
    moved = set(done)
    unchanged = [k for k in dict.fromkeys(external_ids or ()) if k not in moved]
    return RequeueResponse(requeued=done, unchanged=unchanged)
