"""The reason an item failed (``item.error``: the exception text of the last failed run, truncated; cleared
on re-queue). Equivalent to ``service.store.tables.ItemTable.error``.

Revision ID: 0004_item_error
Revises: 0003_keys_and_idempotency
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004_item_error"
down_revision = "0003_keys_and_idempotency"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("item") as batch:
        batch.add_column(sa.Column("error", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("item") as batch:
        batch.drop_column("error")
