"""Label corrections (``label_correction``): each correction's new label id and the label it replaced (value, source,
confidence), who corrected it and why. Equivalent to ``service.store.ops_models.LabelCorrection``. The label table is
unchanged: a corrected label is a ``human`` label, so its source constraint stays as it is.

Revision ID: 0007_label_corrections
Revises: 0006_backtests
Create Date: 2026-11-29
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007_label_corrections"
down_revision = "0006_backtests"
branch_labels = None
depends_on = None

UTC_DATETIME = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "label_correction",
        sa.Column("label", sa.String(length=128), nullable=False),
        sa.Column("replaced_label_id", sa.Integer(), nullable=False),
        sa.Column("replaced_label", sa.String(length=128), nullable=False),
        sa.Column("replaced_source", sa.String(length=8), nullable=False),
        sa.Column("replaced_confidence", sa.Float(), nullable=True),
        sa.Column("reviewer", sa.String(length=128), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("actor", sa.String(length=128), nullable=False),
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("item_id", sa.Integer(), nullable=False),
        sa.Column("policy_version", sa.Integer(), nullable=False),
        sa.Column("label_id", sa.Integer(), nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.ForeignKeyConstraint(["item_id"], ["item.id"]),
        sa.ForeignKeyConstraint(["project_id", "policy_version"],
                                ["policy_version.project_id", "policy_version.version"],
                                name="fk_label_correction_policy_version"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("label_id", name="uq_label_correction_label"),
    )
    op.create_index("ix_label_correction_item", "label_correction", ["item_id", "id"], unique=False)
    op.create_index("ix_label_correction_project_source", "label_correction", ["project_id", "replaced_source"],
                    unique=False)


def downgrade() -> None:
    op.drop_index("ix_label_correction_project_source", table_name="label_correction")
    op.drop_index("ix_label_correction_item", table_name="label_correction")
    op.drop_table("label_correction")
