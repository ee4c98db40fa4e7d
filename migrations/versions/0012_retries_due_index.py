"""retries due: an index for the dispatcher's retry pass

The dispatcher picks retries first (items that ran before and wait with a ``not_before``),
then fresh items, each pass in id order within a batch. The fresh pass reads
``ix_items_undispatched`` (batch, id) in order and stops at its limit; the retry pass had
no such index, so it read and sorted every undispatched item of the running batches at
every tick (about 0.7 s a tick with a million items queued). This partial index holds only
the items waiting for a retry: submit adds nothing to it.

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

RETRIES_DUE = "state = 'queued' AND dispatched_at IS NULL AND not_before IS NOT NULL"


def upgrade() -> None:
    with op.batch_alter_table("items") as batch_op:
        batch_op.create_index(
            "ix_items_retries_due",
            ["batch_id", "id"],
            unique=False,
            sqlite_where=sa.text(RETRIES_DUE),
            postgresql_where=sa.text(RETRIES_DUE),
        )


def downgrade() -> None:
    with op.batch_alter_table("items") as batch_op:
        batch_op.drop_index(
            "ix_items_retries_due",
            sqlite_where=sa.text(RETRIES_DUE),
            postgresql_where=sa.text(RETRIES_DUE),
        )
