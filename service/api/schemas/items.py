"""Items: ingest batches, read an item's state and evidence, export labels, stream label events."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field, model_validator

from policies import InputError
from service.api.schemas.common import ExternalId, Label, Metadata, Reason, Request, ReviewerName, SafeText

ClientStatus = Literal["pending", "labeled", "in_review", "failed"]


def check_item_text(text: str | None, limit: int | None, where: str) -> None:
    """The deployment's limit on an item's text (``max_text_chars``), one rule for every way in (HTTP ingest,
    broker messages): InputError naming ``where`` when ``text`` is longer than ``limit``."""
    if text is not None and limit is not None and len(text) > limit:
        raise InputError(f"{where} has {len(text)} characters; at most {limit} are accepted")


class ItemData(Request):
    text: SafeText | None = Field(default=None, description="The item's text.")
    metadata: Metadata = Field(default_factory=dict, description="Any JSON object (numbers, time, place, ...). "
                                 "EXIF time and GPS of an image fill `time`, `lat` and `lon` when not given here.")
    image_base64: str | None = Field(default=None, min_length=1, description=(
        "The item's image file (PNG, JPEG, GIF, WEBP, BMP or TIFF by default), base64-encoded (standard alphabet; "
        "whitespace and a `data:image/...;base64,` prefix are allowed). Validated before anything is stored."))
    image_url: str | None = Field(default=None, max_length=2048, pattern=r"^[hH][tT][tT][pP][sS]?://",
                                  description="An http(s) URL the server fetches the item's image from at ingest "
                                              "(public addresses only; size, time and redirects capped).")

    @model_validator(mode="after")
    def _not_empty(self) -> ItemData:
        if self.image_base64 is not None and self.image_url is not None:
            raise ValueError("give image_base64 or image_url, not both")
        if self.text is None and not self.metadata and self.image_base64 is None and self.image_url is None:
            raise ValueError("give text, metadata, an image (image_base64 or image_url) or several of these")
        return self


class ItemIn(Request):
    external_id: ExternalId = Field(description="The client's key; sending it again stores nothing new.")
    data: ItemData
    label: Label | None = Field(default=None, description="Ground truth the client already knows (optional).")


class IngestRequest(Request):
    items: list[ItemIn] = Field(min_length=1, description="At most the server's max_batch_items per call.")


class IngestResponse(BaseModel):
    inserted: list[str] = Field(description="External ids stored by this call, in input order.")
    duplicates: list[str] = Field(description="External ids already stored (before, or earlier in this call).")


class VoteOut(BaseModel):
    """One tool's vote on the item: a distribution over the labels, or None when it abstained."""

    tool: str
    distribution: dict[str, float] | None
    cost: float
    evidence: str
    model_version: str | None


class CorrectedFrom(BaseModel):
    """The label a correction replaced, and who corrected it."""

    label_id: int = Field(description="Id of the replaced label (no longer in the export: the correction's label "
                                      "record supersedes it).")
    label: str
    source: Literal["agent", "human"]
    confidence: float | None
    reviewer: str = Field(description="Who corrected it.")
    note: str | None
    corrected_at: datetime


class ItemStatusOut(BaseModel):
    external_id: str
    status: ClientStatus = Field(description="pending (waiting or being labeled), labeled, in_review or failed.")
    label: str | None = Field(description="The label, once labeled.")
    confidence: float | None
    source: Literal["agent", "human"] | None
    policy_version: int | None = Field(description="Version of the policy that labeled (or escalated) the item.")
    threshold: float | None = Field(description="The agent's confidence threshold when it decided.")
    evidence: list[VoteOut] = Field(description="Each tool's vote (hidden while an audit of the item is open).")
    client_label: str | None
    error: str | None = Field(default=None, description="Why the agent failed on the item (set when a run with it "
                              "failed, or when its lease expired on every claim; cleared when it is re-queued).")
    thumbnail_url: str | None = Field(default=None, description="Path of the item's image thumbnail (reviewer and "
                                      "operator keys); null when the item has no image.")
    created_at: datetime
    updated_at: datetime
    corrected_from: CorrectedFrom | None = Field(default=None, description="Set when the current label was written "
                                                 "by a correction: the label it replaced (history: the audit log's "
                                                 "`label.corrected` entries).")


class CorrectionRequest(Request):
    label: Label = Field(description="The right label: one of the labels of the policy version that labeled the item.")
    reviewer: ReviewerName = Field(description="Who corrects it.")
    note: Reason | None = Field(default=None, description="Why (optional, kept in the history).")


class CorrectionResponse(ItemStatusOut):
    changed: bool = Field(description="False when the item already had this label: nothing was written.")


class ItemSummaryOut(BaseModel):
    """One item of a listing: its status and latest label, without the evidence (``GET .../items/{id}`` has it)."""

    external_id: str
    status: ClientStatus
    label: str | None = Field(description="The latest label, once labeled.")
    source: str | None = Field(description="Who gave the label.")
    confidence: float | None
    policy_version: int | None = Field(description="Version of the policy the label was given under.")
    client_label: str | None
    error: str | None = Field(description="Why the agent failed on the item (failed items).")
    created_at: datetime
    updated_at: datetime


class ItemPage(BaseModel):
    items: list[ItemSummaryOut] = Field(description="In arrival order.")
    next_after: int | None = Field(description="Pass as `after` for the next page; null on the last page.")


class RequeueRequest(Request):
    external_ids: list[ExternalId] | None = Field(
        default=None, max_length=1000, description="Failed items to re-queue; omit to re-queue every failed item.")


class RequeueResponse(BaseModel):
    requeued: list[str]
    unchanged: list[str] = Field(description="Listed ids that were not failed (or do not exist): left as they were.")


class LabelRecord(BaseModel):
    """One label: a line of the JSONL export, a row of the CSV export, the data of a server-sent event."""

    label_id: int = Field(description="Increases with every label written; the SSE event id.")
    external_id: str
    label: str
    confidence: float | None
    source: Literal["agent", "human"]
    policy_version: int
    threshold: float | None
    created_at: datetime
    replaces_label_id: int | None = Field(default=None, description="Set on a label written by a correction: the "
                                          "id of the item's label it supersedes (sent earlier, with a smaller id).")
    snapshot_id: int | None = Field(default=None, description="An auto label's certified snapshot: the one that "
                                    "decided it (its threshold and pool); None for human labels.")
