"""batch tallies: per-batch running totals for status; items index with finished_at

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG = sa.BigInteger().with_variant(sa.Integer(), "sqlite")

# Existing batches get their tallies from their rows, once (shard 0).
BACKFILL = [
    """INSERT INTO batch_tallies (batch_id, kind, key, shard, value)
       SELECT batch_id, 'state', state, 0, count(*) FROM items
       WHERE state IN ('succeeded', 'failed', 'cancelled') GROUP BY batch_id, state""",
    """INSERT INTO batch_tallies (batch_id, kind, key, shard, value)
       SELECT batch_id, 'error', coalesce(last_error_code, ''), 0, count(*) FROM items
       WHERE state IN ('failed', 'cancelled') GROUP BY batch_id, coalesce(last_error_code, '')""",
    """INSERT INTO batch_tallies (batch_id, kind, key, shard, value)
       SELECT i.batch_id, 'finish', coalesce(r.finish_reason, ''), 0, count(*)
       FROM results r JOIN items i ON i.id = r.item_id
       WHERE i.state = 'succeeded' GROUP BY i.batch_id, coalesce(r.finish_reason, '')""",
] + [
    f"""INSERT INTO batch_tallies (batch_id, kind, key, shard, value)
       SELECT i.batch_id, '{kind}', coalesce(r.model, ''), 0, sum(r.{column})
       FROM results r JOIN items i ON i.id = r.item_id
       WHERE i.state = 'succeeded' GROUP BY i.batch_id, coalesce(r.model, '')"""
    for kind, column in (
        ("input", "input_tokens"),
        ("output", "output_tokens"),
        ("image", "image_tokens"),
        ("total", "total_tokens"),
    )
]


def upgrade() -> None:
    op.create_table(
        "batch_tallies",
        sa.Column("batch_id", sa.Integer(), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("key", sa.String(length=100), nullable=False),
        sa.Column("shard", sa.Integer(), nullable=False),
        sa.Column("value", BIG, nullable=False),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["batches.id"],
            name=op.f("fk_batch_tallies_batch_id_batches"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("batch_id", "kind", "key", "shard", name=op.f("pk_batch_tallies")),
    )
    for statement in BACKFILL:
        op.execute(statement)
    with op.batch_alter_table("items", schema=None) as batch_op:
        batch_op.create_index(
            "ix_items_batch_state_finished", ["batch_id", "state", "finished_at"], unique=False
        )
        batch_op.drop_index("ix_items_batch_id_state")


def downgrade() -> None:
    with op.batch_alter_table("items", schema=None) as batch_op:
        batch_op.create_index("ix_items_batch_id_state", ["batch_id", "state"], unique=False)
        batch_op.drop_index("ix_items_batch_state_finished")
    op.drop_table("batch_tallies")
