"""strings of any length: TEXT for user- and provider-chosen strings; sources unique by sha256

A provider's error code or request id longer than its VARCHAR failed every write of the
call on PostgreSQL, and so did a long batch name; a source above ~2.7 KB (a presigned URL)
could not enter the btree index of UNIQUE (batch_id, source). The columns become TEXT, and
uniqueness moves to (batch_id, source_sha256), the hex sha256 of the source's UTF-8 bytes.

Downgrading narrows the columns again: it fails on PostgreSQL if a longer value is stored.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from collections.abc import Sequence
from hashlib import sha256

import sqlalchemy as sa
from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (table, column, the VARCHAR length it had, nullable)
WIDENED = {
    "batches": [
        ("name", 200, False),
        ("model", 64, False),
        ("task", 40, True),
        ("schedule_name", 200, True),
    ],
    "items": [("fingerprint", 200, True), ("last_error_code", 100, True)],
    "results": [("finish_reason", 32, True), ("request_id", 100, True), ("model", 64, True)],
    "attempts": [("error_code", 100, True), ("request_id", 100, True), ("worker", 200, True)],
    "batch_tallies": [("key", 100, False)],
    "schedule_runs": [("schedule_name", 200, False), ("error_code", 100, True)],
}
BACKFILL_CHUNK = 10_000


def upgrade() -> None:
    with op.batch_alter_table("items") as batch_op:
        batch_op.add_column(sa.Column("source_sha256", sa.String(length=64), nullable=True))
    _fill_source_sha256()
    for table, columns in WIDENED.items():
        # On SQLite each block rebuilds its table once: items' new key goes in the same one.
        with op.batch_alter_table(table) as batch_op:
            for column, length, nullable in columns:
                batch_op.alter_column(
                    column,
                    existing_type=sa.String(length=length),
                    type_=sa.Text(),
                    existing_nullable=nullable,
                )
            if table == "items":
                batch_op.alter_column(
                    "source_sha256", existing_type=sa.String(length=64), nullable=False
                )
                batch_op.drop_constraint("uq_items_batch_id_source", type_="unique")
                batch_op.create_unique_constraint(
                    "uq_items_batch_id_source_sha256", ["batch_id", "source_sha256"]
                )


def _fill_source_sha256() -> None:
    conn = op.get_bind()
    if conn.dialect.name == "postgresql":
        op.execute(
            "UPDATE items SET source_sha256 = encode(sha256(convert_to(source, 'UTF8')), 'hex')"
        )
        return
    # SQLite has no sha256(): hash in Python, a chunk of ids at a time.
    select_chunk = sa.text("SELECT id, source FROM items WHERE id > :after ORDER BY id LIMIT :size")
    update = sa.text("UPDATE items SET source_sha256 = :digest WHERE id = :id")
    after = 0
    while rows := conn.execute(select_chunk, {"after": after, "size": BACKFILL_CHUNK}).all():
        conn.execute(
            update,
            [
                {"id": row.id, "digest": sha256(row.source.encode("utf-8")).hexdigest()}
                for row in rows
            ],
        )
        after = rows[-1].id


def downgrade() -> None:
    with op.batch_alter_table("items") as batch_op:
        batch_op.drop_constraint("uq_items_batch_id_source_sha256", type_="unique")
        batch_op.create_unique_constraint("uq_items_batch_id_source", ["batch_id", "source"])
        batch_op.drop_column("source_sha256")
    for table, columns in WIDENED.items():
        with op.batch_alter_table(table) as batch_op:
            for column, length, nullable in columns:
                batch_op.alter_column(
                    column,
                    existing_type=sa.Text(),
                    type_=sa.String(length=length),
                    existing_nullable=nullable,
                )
