"""items waiting in the queue leave ix_items_batch_state_finished (PostgreSQL)

A submit COPYs its items into ``items``, each a row queued and not in the broker, and each
row paid an entry in every index: the primary key, ``ix_items_undispatched`` and
``ix_items_batch_state_finished`` (~1 s a million each). The last one now leaves out the
items waiting in the queue (``ix_items_undispatched`` holds exactly those), so a submit
writes two entries a row. An item enters it when it moves (dispatched, running, done):
that UPDATE changes an indexed column and writes every index already, so nothing is paid
later that was not paid before. SQLite keeps the full index: it uses a partial index only
for terms it matches literally.

Rebuilding the index locks writes to items while it runs (seconds a million rows):
upgrade between runs.

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

INDEX = "ix_items_batch_state_finished"
COLUMNS = ["batch_id", "state", "finished_at"]
MOVED_ON = "NOT (state = 'queued' AND dispatched_at IS NULL)"


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_index(INDEX, table_name="items")
    op.create_index(INDEX, "items", COLUMNS, postgresql_where=sa.text(MOVED_ON))


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.drop_index(INDEX, table_name="items")
    op.create_index(INDEX, "items", COLUMNS)
