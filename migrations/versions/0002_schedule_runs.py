"""schedule runs: one row per schedule and slot, with the run's outcome and export

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EXPORT_PENDING = "export_uri IS NOT NULL AND exported_at IS NULL"


def upgrade() -> None:
    op.create_table(
        "schedule_runs",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("schedule_name", sa.String(length=200), nullable=False),
        sa.Column("scheduled_for", sa.DateTime(timezone=True), nullable=False),
        sa.Column("triggered_by", sa.String(length=16), nullable=False),
        sa.Column(
            "outcome",
            sa.Enum(
                "running",
                "batch_created",
                "nothing_new",
                "failed",
                name="schedule_run_outcome",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("batch_id", sa.Integer(), nullable=True),
        sa.Column("new_items", sa.Integer(), nullable=False),
        sa.Column("error_code", sa.String(length=100), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("export_uri", sa.Text(), nullable=True),
        sa.Column("exported_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("export_attempts", sa.Integer(), nullable=False),
        sa.Column("export_error", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["batches.id"],
            name=op.f("fk_schedule_runs_batch_id_batches"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_schedule_runs")),
        sa.UniqueConstraint(
            "schedule_name",
            "scheduled_for",
            name=op.f("uq_schedule_runs_schedule_name_scheduled_for"),
        ),
    )
    with op.batch_alter_table("schedule_runs", schema=None) as batch_op:
        batch_op.create_index(
            "ix_schedule_runs_export_pending",
            ["batch_id"],
            unique=False,
            sqlite_where=sa.text(EXPORT_PENDING),
            postgresql_where=sa.text(EXPORT_PENDING),
        )


def downgrade() -> None:
    with op.batch_alter_table("schedule_runs", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_schedule_runs_export_pending",
            sqlite_where=sa.text(EXPORT_PENDING),
            postgresql_where=sa.text(EXPORT_PENDING),
        )
    op.drop_table("schedule_runs")
