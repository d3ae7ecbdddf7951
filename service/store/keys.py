"""API keys (create, list, revoke, authenticate) and the idempotency records of ingest calls.

A key reads ``la_<prefix>_<secret>``: the prefix (12 hex digits, public) finds the row, the whole key's SHA-256 is
compared with :func:`hmac.compare_digest`. The key itself is returned once, by :meth:`KeysMixin.create_key`.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Table, bindparam, delete, func, insert, select, update
from sqlalchemy.exc import IntegrityError

from policies import InputError, NotFoundError
from service.store.auth_models import ROLES, ApiKey, ApiKeyPublic, IdempotencyRecord
from service.store.base import StoreBase, as_utc
from service.store.db import read_tx, write_tx

key_t: Table = ApiKey.__table__  # type: ignore[attr-defined]
idem_t: Table = IdempotencyRecord.__table__  # type: ignore[attr-defined]

KEY_PREFIX = "la_"
_KEY_BY_PREFIX = select(key_t).where(key_t.c.prefix == bindparam("prefix"))  # every request: built once


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()


def split_key(key: str) -> str | None:
    """The prefix of a well-formed key, else None."""
    if not key.startswith(KEY_PREFIX):
        return None
    prefix, sep, secret = key[len(KEY_PREFIX):].partition("_")
    if not sep or not secret or len(prefix) != 12 or any(c not in "0123456789abcdef" for c in prefix):
        return None
    return prefix


class KeysMixin(StoreBase):
    def create_key(self, *, name: str, role: str, projects: Sequence[str] | None = None,
                   now: datetime | None = None) -> tuple[str, ApiKeyPublic]:
        """A new key: (the key, shown once; its public record). ``projects`` None means every project."""
        if role not in ROLES:
            raise InputError(f"role {role!r} is not one of {list(ROLES)}")
        if projects is not None and not projects:
            raise InputError("give at least one project, or none at all for every project")
        prefix = secrets.token_hex(6)
        key = f"{KEY_PREFIX}{prefix}_{secrets.token_urlsafe(32)}"
        row = {"name": name, "role": role, "projects": sorted(set(projects)) if projects is not None else None,
               "prefix": prefix, "key_hash": hash_key(key), "created_at": as_utc(now), "revoked_at": None}
        with write_tx(self.engine) as conn:
            row["id"] = conn.execute(insert(key_t).values(**row).returning(key_t.c.id)).scalar_one()
        return key, ApiKeyPublic.model_validate(row)

    def list_keys(self) -> list[ApiKeyPublic]:
        with read_tx(self.engine) as conn:
            rows = conn.execute(select(key_t).order_by(key_t.c.id)).mappings().all()
        return [ApiKeyPublic.model_validate(dict(r)) for r in rows]

    def count_keys(self) -> int:
        with read_tx(self.engine) as conn:
            return int(conn.execute(select(func.count()).select_from(key_t)).scalar_one())

    def revoke_key(self, prefix: str, *, now: datetime | None = None) -> ApiKeyPublic:
        """Revoke the key with this prefix (or id); revoking twice keeps the first time."""
        numeric = prefix.isascii() and prefix.isdigit() and len(prefix) != 12
        cond = key_t.c.id == int(prefix) if numeric else key_t.c.prefix == prefix
        with write_tx(self.engine) as conn:
            conn.execute(update(key_t).where(cond, key_t.c.revoked_at.is_(None)).values(revoked_at=as_utc(now)))
            row = conn.execute(select(key_t).where(cond)).mappings().first()
        if row is None:
            raise NotFoundError(f"API key {prefix!r} does not exist")
        return ApiKeyPublic.model_validate(dict(row))

    def key_is_live(self, key_id: int) -> bool:
        """Whether the key with this id exists and is not revoked (long streams re-check their key with it)."""
        with read_tx(self.engine) as conn:
            revoked = conn.execute(select(key_t.c.revoked_at).where(key_t.c.id == key_id)).first()
        return revoked is not None and revoked[0] is None

    def authenticate(self, key: str) -> ApiKeyPublic | None:
        """The key's record if ``key`` is a live (not revoked) key, else None."""
        prefix = split_key(key)
        if prefix is None:
            return None
        with read_tx(self.engine) as conn:
            row = conn.execute(_KEY_BY_PREFIX, {"prefix": prefix}).mappings().first()
        if row is None or not hmac.compare_digest(row["key_hash"], hash_key(key)) or row["revoked_at"] is not None:
            return None
        return ApiKeyPublic.model_validate(dict(row))

    # --- idempotency ------------------------------------------------------------------------------------

    def get_idempotent(self, project: str, key: str) -> tuple[str, int, dict[str, Any]] | None:
        """(request hash, status code, response) stored for ``key`` in the project, or None."""
        with read_tx(self.engine) as conn:
            pid = self._project_id(conn, project)
            row = conn.execute(select(idem_t.c.request_hash, idem_t.c.status_code, idem_t.c.response)
                               .where(idem_t.c.project_id == pid, idem_t.c.key == key)).first()
        return None if row is None else (row[0], int(row[1]), dict(row[2]))

    def reserve_idempotent(self, project: str, key: str, request_hash: str, *,
                           now: datetime | None = None) -> tuple[str, int, dict[str, Any]] | None:
        """Claim ``key`` for a request (status 0 until :meth:`finish_idempotent`): None when this caller got it,
        else what is stored (status 0: another request with the key is still running). A reservation older than
        ``idempotency_timeout_seconds`` without an answer (its process died) is taken over by this caller."""
        now = as_utc(now)
        stale = now - timedelta(seconds=self.settings.idempotency_timeout_seconds)
        with write_tx(self.engine) as conn:
            pid = self._project_id(conn, project)
            conn.execute(delete(idem_t).where(idem_t.c.project_id == pid, idem_t.c.key == key,
                                              idem_t.c.status_code == 0, idem_t.c.created_at < stale))
        try:
            with write_tx(self.engine) as conn:
                pid = self._project_id(conn, project)
                conn.execute(insert(idem_t).values(project_id=pid, key=key, request_hash=request_hash, status_code=0,
                                                   response={}, created_at=now))
        except IntegrityError:
            stored = self.get_idempotent(project, key)
            if stored is None:  # the holder gave the key up meanwhile: try once more
                return self.reserve_idempotent(project, key, request_hash, now=now)
            return stored
        return None

    def finish_idempotent(self, project: str, key: str, status_code: int, response: dict[str, Any]) -> None:
        """Store the answer of the request that reserved ``key``."""
        with write_tx(self.engine) as conn:
            pid = self._project_id(conn, project)
            conn.execute(update(idem_t).where(idem_t.c.project_id == pid, idem_t.c.key == key)
                         .values(status_code=status_code, response=response))

    def drop_idempotent(self, project: str, key: str) -> None:
        """Give ``key`` up (the request failed): a retry runs again."""
        with write_tx(self.engine) as conn:
            pid = self._project_id(conn, project)
            conn.execute(delete(idem_t).where(idem_t.c.project_id == pid, idem_t.c.key == key,
                                              idem_t.c.status_code == 0))
