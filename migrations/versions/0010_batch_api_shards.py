"""batch mode: the provider's Batch API, in shards

A batch has a ``mode``: ``realtime`` (every batch so far) or ``batch`` (its items go to
Model Studio's Batch API). Each shard of a batch-mode batch is one uploaded JSONL file and
the provider batch made from it (``batch_shards``); ``shard_items`` says which shard holds
an item (at most one).

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("batches") as batch_op:
        batch_op.add_column(
            sa.Column("mode", sa.String(length=16), server_default="realtime", nullable=False)
        )

    op.create_table(
        "batch_shards",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("batch_id", sa.Integer(), nullable=False),
        sa.Column(
            "state",
            sa.Enum(
                "pending",
                "submitted",
                "collecting",
                "done",
                name="shard_state",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("lines", sa.Integer(), nullable=True),
        sa.Column("bytes", sa.BigInteger(), nullable=True),
        sa.Column("file_id", sa.Text(), nullable=True),
        sa.Column("provider_batch_id", sa.Text(), nullable=True),
        sa.Column("provider_status", sa.Text(), nullable=True),
        sa.Column("request_total", sa.Integer(), nullable=False),
        sa.Column("request_completed", sa.Integer(), nullable=False),
        sa.Column("request_failed", sa.Integer(), nullable=False),
        sa.Column("output_file_id", sa.Text(), nullable=True),
        sa.Column("error_file_id", sa.Text(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("cancel_requested", sa.Boolean(), server_default=sa.false(), nullable=False),
        sa.Column("lease_token", sa.String(length=32), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("published_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("polled_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("submitted_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["batches.id"],
            name=op.f("fk_batch_shards_batch_id_batches"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_batch_shards")),
    )
    op.create_index(
        "ix_batch_shards_batch_id_state", "batch_shards", ["batch_id", "state"], unique=False
    )

    op.create_table(
        "shard_items",
        sa.Column("item_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("shard_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["item_id"], ["items.id"], name=op.f("fk_shard_items_item_id_items"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["shard_id"],
            ["batch_shards.id"],
            name=op.f("fk_shard_items_shard_id_batch_shards"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("item_id", name=op.f("pk_shard_items")),
    )
    op.create_index(
        "ix_shard_items_shard_id_item_id", "shard_items", ["shard_id", "item_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index("ix_shard_items_shard_id_item_id", table_name="shard_items")
    op.drop_table("shard_items")
    op.drop_index("ix_batch_shards_batch_id_state", table_name="batch_shards")
    op.drop_table("batch_shards")
    with op.batch_alter_table("batches") as batch_op:
        batch_op.drop_column("mode")
