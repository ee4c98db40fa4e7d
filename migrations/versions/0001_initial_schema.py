"""initial schema: batches, items, results, attempts

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

# JSONB on PostgreSQL, JSON text on SQLite: the same type as models.base.PortableJSON.
JSON_TYPE = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "batches",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("api", sa.String(length=16), nullable=False),
        sa.Column("model", sa.String(length=64), nullable=False),
        sa.Column("task", sa.String(length=40), nullable=True),
        sa.Column("prompt", sa.Text(), nullable=True),
        sa.Column("result_schema", JSON_TYPE, nullable=True),
        sa.Column("options", JSON_TYPE, nullable=False),
        sa.Column("source_options", JSON_TYPE, nullable=False),
        sa.Column(
            "state",
            sa.Enum(
                "running",
                "completed",
                "cancelled",
                "stopped",
                name="batch_state",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("stop_reason", sa.Text(), nullable=True),
        sa.Column("total_items", sa.Integer(), nullable=False),
        sa.Column("schedule_name", sa.String(length=200), nullable=True),
        sa.Column("scheduled_for", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_batches")),
        sa.UniqueConstraint(
            "schedule_name", "scheduled_for", name=op.f("uq_batches_schedule_name_scheduled_for")
        ),
    )
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.create_index("ix_batches_state_created_at", ["state", "created_at"], unique=False)

    op.create_table(
        "items",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("batch_id", sa.Integer(), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("fingerprint", sa.String(length=200), nullable=True),
        sa.Column(
            "state",
            sa.Enum(
                "queued",
                "running",
                "succeeded",
                "failed",
                "cancelled",
                name="item_state",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("last_error_code", sa.String(length=100), nullable=True),
        sa.Column("last_error_message", sa.Text(), nullable=True),
        sa.Column("not_before", sa.DateTime(timezone=True), nullable=True),
        sa.Column("dispatched_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_token", sa.String(length=32), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["batch_id"], ["batches.id"], name=op.f("fk_items_batch_id_batches"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_items")),
        sa.UniqueConstraint("batch_id", "source", name=op.f("uq_items_batch_id_source")),
    )
    with op.batch_alter_table("items", schema=None) as batch_op:
        batch_op.create_index("ix_items_batch_id_state", ["batch_id", "state"], unique=False)
        batch_op.create_index(
            "ix_items_in_broker",
            ["dispatched_at"],
            unique=False,
            sqlite_where=sa.text("state = 'queued' AND dispatched_at IS NOT NULL"),
            postgresql_where=sa.text("state = 'queued' AND dispatched_at IS NOT NULL"),
        )
        batch_op.create_index(
            "ix_items_running_lease",
            ["lease_until"],
            unique=False,
            sqlite_where=sa.text("state = 'running'"),
            postgresql_where=sa.text("state = 'running'"),
        )
        batch_op.create_index(
            "ix_items_undispatched",
            ["batch_id", "id"],
            unique=False,
            sqlite_where=sa.text("state = 'queued' AND dispatched_at IS NULL"),
            postgresql_where=sa.text("state = 'queued' AND dispatched_at IS NULL"),
        )

    op.create_table(
        "attempts",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("item_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column(
            "outcome",
            sa.Enum(
                "succeeded",
                "retry",
                "failed",
                "stopped",
                "discarded",
                name="attempt_outcome",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("ended_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("error_code", sa.String(length=100), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("request_id", sa.String(length=100), nullable=True),
        sa.Column("retry_after", sa.Float(), nullable=True),
        sa.Column("worker", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(
            ["item_id"], ["items.id"], name=op.f("fk_attempts_item_id_items"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_attempts")),
        sa.UniqueConstraint("item_id", "number", name=op.f("uq_attempts_item_id_number")),
    )
    op.create_table(
        "results",
        sa.Column("item_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("kv_result", JSON_TYPE, nullable=True),
        sa.Column("words_info", JSON_TYPE, nullable=True),
        sa.Column("parsed", JSON_TYPE, nullable=True),
        sa.Column("finish_reason", sa.String(length=32), nullable=True),
        sa.Column("request_id", sa.String(length=100), nullable=True),
        sa.Column("model", sa.String(length=64), nullable=True),
        sa.Column("input_tokens", sa.Integer(), nullable=False),
        sa.Column("output_tokens", sa.Integer(), nullable=False),
        sa.Column("image_tokens", sa.Integer(), nullable=False),
        sa.Column("total_tokens", sa.Integer(), nullable=False),
        sa.Column("latency_ms", sa.Float(), nullable=True),
        sa.Column("image_sha256", sa.String(length=64), nullable=True),
        sa.Column("options_fingerprint", sa.String(length=64), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["item_id"], ["items.id"], name=op.f("fk_results_item_id_items"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("item_id", name=op.f("pk_results")),
    )
    with op.batch_alter_table("results", schema=None) as batch_op:
        batch_op.create_index(
            "ix_results_cache_key", ["image_sha256", "options_fingerprint"], unique=False
        )


def downgrade() -> None:
    with op.batch_alter_table("results", schema=None) as batch_op:
        batch_op.drop_index("ix_results_cache_key")

    op.drop_table("results")
    op.drop_table("attempts")
    with op.batch_alter_table("items", schema=None) as batch_op:
        batch_op.drop_index(
            "ix_items_undispatched",
            sqlite_where=sa.text("state = 'queued' AND dispatched_at IS NULL"),
            postgresql_where=sa.text("state = 'queued' AND dispatched_at IS NULL"),
        )
        batch_op.drop_index(
            "ix_items_running_lease",
            sqlite_where=sa.text("state = 'running'"),
            postgresql_where=sa.text("state = 'running'"),
        )
        batch_op.drop_index(
            "ix_items_in_broker",
            sqlite_where=sa.text("state = 'queued' AND dispatched_at IS NOT NULL"),
            postgresql_where=sa.text("state = 'queued' AND dispatched_at IS NOT NULL"),
        )
        batch_op.drop_index("ix_items_batch_id_state")

    op.drop_table("items")
    with op.batch_alter_table("batches", schema=None) as batch_op:
        batch_op.drop_index("ix_batches_state_created_at")

    op.drop_table("batches")
