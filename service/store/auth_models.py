"""Tables of access control and idempotency (same conventions as ``service.store.tables``): API keys, stored hashed, and
the first answer to each ``Idempotency-Key`` of an ingest call.

Importing :mod:`service.store` (or :func:`service.store.db.create_all`) registers these tables on ``SQLModel.metadata``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from sqlalchemy import String
from sqlalchemy import UniqueConstraint as Unique
from sqlmodel import Field, SQLModel

from service.store.tables import JSONType, UTCDateTime, utcnow

ROLES = ("ingest", "reviewer", "operator")
Role = Literal["ingest", "reviewer", "operator"]


class ApiKeyBase(SQLModel):
    name: str = Field(max_length=128, description="What the key is for (free text).")
    role: str = Field(sa_type=String(16), description="ingest, reviewer or operator.")
    projects: list[str] | None = Field(default=None, sa_type=JSONType,
                                       description="Projects the key may use; None means every project.")


class ApiKey(ApiKeyBase, table=True):
    """One API key. Only ``sha256(key)`` is stored; ``prefix`` (public, part of the key) finds the row."""

    __tablename__ = "api_key"
    id: int | None = Field(default=None, primary_key=True)
    prefix: str = Field(max_length=16, unique=True)
    key_hash: str = Field(max_length=64)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class ApiKeyPublic(ApiKeyBase):
    id: int
    prefix: str
    created_at: datetime
    revoked_at: datetime | None


class IdempotencyRecord(SQLModel, table=True):
    """The first answer to an ingest call with an ``Idempotency-Key`` (per project), and a digest of its body."""

    __tablename__ = "idempotency_key"
    __table_args__ = (Unique("project_id", "key", name="uq_idempotency_key_project_key"),)
    id: int | None = Field(default=None, primary_key=True)
    project_id: int = Field(foreign_key="project.id")
    key: str = Field(max_length=128)
    request_hash: str = Field(max_length=64)
    status_code: int
    response: dict[str, Any] = Field(default_factory=dict, sa_type=JSONType)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


__all__ = ["ROLES", "ApiKey", "ApiKeyPublic", "IdempotencyRecord", "Role"]
