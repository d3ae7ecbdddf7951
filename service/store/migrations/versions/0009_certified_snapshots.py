"""Certified snapshots (issue 14): the ``agent_snapshot`` table (each snapshot a worker decided with, with its
certificate and the certifier's state, so a restarted worker decides with the same certificate), and
``snapshot_id`` on ``label`` and ``review_task`` (which snapshot decided an auto label or an audit). Equivalent to
``service.store.snapshot_models.AgentSnapshotTable`` and the two ``snapshot_id`` fields of ``service.store.tables``.

Revision ID: 0009_certified_snapshots
Revises: 0008_label_studio_annotations
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision = "0009_certified_snapshots"
down_revision = "0008_label_studio_annotations"
branch_labels = None
depends_on = None

UTC_DATETIME = sa.DateTime(timezone=True)
JSON_TYPE = sa.JSON(none_as_null=True).with_variant(postgresql.JSONB(none_as_null=True), "postgresql")


def upgrade() -> None:
    op.create_table(
        "agent_snapshot",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("project_id", sa.Integer(), nullable=False),
        sa.Column("policy_version", sa.Integer(), nullable=False),
        sa.Column("learner_version", sa.Integer(), nullable=False),
        sa.Column("threshold", sa.Float(), nullable=True),
        sa.Column("n_calibration", sa.Integer(), nullable=False),
        sa.Column("n_above", sa.Integer(), nullable=False),
        sa.Column("errors_above", sa.Integer(), nullable=False),
        sa.Column("worker", sa.String(length=128), nullable=False),
        sa.Column("state", JSON_TYPE, nullable=False),
        sa.Column("created_at", UTC_DATETIME, nullable=False),
        sa.ForeignKeyConstraint(["project_id"], ["project.id"]),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index("ix_agent_snapshot_project_version", "agent_snapshot", ["project_id", "policy_version", "id"],
                    unique=False)
    op.add_column("label", sa.Column("snapshot_id", sa.Integer(), nullable=True))
    op.add_column("review_task", sa.Column("snapshot_id", sa.Integer(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("review_task") as batch:
        batch.drop_column("snapshot_id")
    with op.batch_alter_table("label") as batch:
        batch.drop_column("snapshot_id")
    op.drop_index("ix_agent_snapshot_project_version", table_name="agent_snapshot")
    op.drop_table("agent_snapshot")
