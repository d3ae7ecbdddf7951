"""Label Studio annotations (``ls_annotation``): every annotation of an item as Label Studio sent it (label or
skipped, result, ground-truth flag, who made it, when, how long it took), so exports give them all back. Equivalent
to ``service.store.labelstudio_models.LabelStudioAnnotation``; the label table is unchanged (ground truth stays one
``human`` label per item).

Revision ID: 0008_label_studio_annotations
Revises: 0007_label_corrections
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0008_label_studio_annotations"
down_revision = "0007_label_corrections"
branch_labels = None
depends_on = None

UTC_DATETIME = sa.DateTime(timezone=True)
JSON_TYPE = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def upgrade() -> None:
    op.create_table(
        "ls_annotation",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("annotation_id", sa.BigInteger(), nullable=True),
        sa.Column("label", sa.String(length=128), nullable=True),
        sa.Column("was_cancelled", sa.Boolean(), nullable=False),
        sa.Column("ground_truth", sa.Boolean(), nullable=False),
        sa.Column("result", JSON_TYPE, nullable=False),
        sa.Column("completed_by", JSON_TYPE, nullable=True),
        sa.Column("lead_time", sa.Float(), nullable=True),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.Column("updated_at", UTC_DATETIME, nullable=True),
        sa.ForeignKeyConstraint(["item_id"], ["item.id"]),
        sa.ForeignKeyConstraint(["project_id"], ["project.id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("item_id", "annotation_id", name="uq_ls_annotation_item_annotation"),
    )
    op.create_index("ix_ls_annotation_project_annotation", "ls_annotation", ["project_id", "annotation_id"],
                    unique=False)


def downgrade() -> None:
    op.drop_index("ix_ls_annotation_project_annotation", table_name="ls_annotation")
    op.drop_table("ls_annotation")
