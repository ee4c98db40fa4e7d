"""items written by COPY: no per-row foreign keys or unique index; a registry for only_new

A submit writes a batch's items with COPY straight into ``items``. Two per-row costs went
with it (bench/RESULTS.md, "Submit ÷ COPY"):

- the foreign keys ``items.batch_id → batches`` and ``items.parent_item_id → items``
  (a trigger call per row, and a lock of the batch row for each). Integrity holds by
  construction: no code deletes a batch or an item, and the only writers of items insert
  into a batch made in the same transaction (submit) or copy the batch id and item id of
  an item they hold (a document's pages);
- the unique ``(batch_id, source_sha256)``: a btree on a random 64-character digest. A
  source listed twice is now deleted after the COPY, in the same transaction, by one
  statement over the batch (the first listing, the lowest id, is kept).

``state``, ``attempts``, ``created_at`` and ``updated_at`` get server defaults, so COPY
sends four columns a row. ``ux_items_parent_page`` stays: a page is still one item.

``schedule_sources`` replaces what the unique index did for ``only_new`` schedules: for
each source (by digest) of a schedule, the items made for it. It is written only for the
batches of ``only_new`` schedules, and filled here from every scheduled item so far.

Downgrading restores the constraints; it fails if a row would break them.

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-30
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy import TextClause
from sqlalchemy.types import TypeEngine

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
# (column, type, server default) given defaults for COPY.
DEFAULTED: list[tuple[str, TypeEngine[Any], TextClause]] = [
    ("state", sa.String(length=16), sa.text("'queued'")),
    ("attempts", sa.Integer(), sa.text("0")),
    ("created_at", sa.DateTime(timezone=True), sa.text("CURRENT_TIMESTAMP")),
    ("updated_at", sa.DateTime(timezone=True), sa.text("CURRENT_TIMESTAMP")),
]


def upgrade() -> None:
    # On SQLite, one rebuild of items for all of it.
    with op.batch_alter_table("items") as batch_op:
        batch_op.drop_constraint("uq_items_batch_id_source_sha256", type_="unique")
        batch_op.drop_constraint("fk_items_batch_id_batches", type_="foreignkey")
        batch_op.drop_constraint("fk_items_parent_item_id_items", type_="foreignkey")
        for column, type_, default in DEFAULTED:
            batch_op.alter_column(
                column, existing_type=type_, existing_nullable=False, server_default=default
            )

    op.create_table(
        "schedule_sources",
        sa.Column("schedule_name", sa.Text(), nullable=False),
        sa.Column("source_sha256", sa.String(length=64), nullable=False),
        sa.Column("item_id", BIG, nullable=False),
        sa.PrimaryKeyConstraint(
            "schedule_name", "source_sha256", "item_id", name=op.f("pk_schedule_sources")
        ),
    )
    # Items made at submit only: a page's digest is never a listed source's.
    op.execute(
        "INSERT INTO schedule_sources (schedule_name, source_sha256, item_id)"
        " SELECT batches.schedule_name, items.source_sha256, items.id"
        " FROM items JOIN batches ON batches.id = items.batch_id"
        " WHERE batches.schedule_name IS NOT NULL AND items.parent_item_id IS NULL"
    )


def downgrade() -> None:
    op.drop_table("schedule_sources")
    with op.batch_alter_table("items") as batch_op:
        for column, type_, _ in DEFAULTED:
            batch_op.alter_column(
                column, existing_type=type_, existing_nullable=False, server_default=None
            )
        batch_op.create_foreign_key(
            op.f("fk_items_parent_item_id_items"),
            "items",
            ["parent_item_id"],
            ["id"],
            ondelete="CASCADE",
        )
        batch_op.create_foreign_key(
            op.f("fk_items_batch_id_batches"), "batches", ["batch_id"], ["id"], ondelete="CASCADE"
        )
        batch_op.create_unique_constraint(
            op.f("uq_items_batch_id_source_sha256"), ["batch_id", "source_sha256"]
        )
