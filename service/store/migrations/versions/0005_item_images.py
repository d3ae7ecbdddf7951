"""Item images move out of the item row into ``item_image`` (bytes and a reviewer thumbnail), so item scans and
claims read small rows. Existing ``item.image`` bytes are copied over (thumbnails are made on first request), then
the column is dropped. Equivalent to ``service.store.tables.ItemImage``.

Revision ID: 0005_item_images
Revises: 0004_item_error
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005_item_images"
down_revision = "0004_item_error"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "item_image",
        sa.Column("item_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("thumbnail", sa.LargeBinary(), nullable=True),
        sa.ForeignKeyConstraint(["item_id"], ["item.id"]),
        sa.PrimaryKeyConstraint("item_id"),
    )
    op.execute(
        "INSERT INTO item_image (item_id, project_id, data) "
        "SELECT id, project_id, image FROM item WHERE image IS NOT NULL"
    )
    # in place (SQLite >= 3.35 drops a column itself): recreating the item table would break the foreign keys
    # that vote, label, review_task and item_image hold on it
    with op.batch_alter_table("item", recreate="never") as batch:
        batch.drop_column("image")


def downgrade() -> None:
    with op.batch_alter_table("item") as batch:
        batch.add_column(sa.Column("image", sa.LargeBinary(), nullable=True))
    op.execute("UPDATE item SET image = (SELECT data FROM item_image WHERE item_image.item_id = item.id)")
    op.drop_table("item_image")
