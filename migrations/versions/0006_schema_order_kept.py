"""schema order kept: a batch's result_schema and options as JSON text, not JSONB

JSONB stores an object's keys sorted (by length, then bytes), so a schema written
``number, seller, date, total`` came back ``date, total, number, seller``: the CSV's
columns were reordered, and so was the schema the workers send to the model. JSON keeps
the text as written. Only PostgreSQL changes (SQLite stores JSON text already); rows
written before keep the order JSONB gave them.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (column, nullable)
COLUMNS = (("result_schema", True), ("options", False))


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for column, nullable in COLUMNS:
        op.alter_column(
            "batches",
            column,
            existing_type=postgresql.JSONB(),
            type_=sa.JSON(),
            existing_nullable=nullable,
            postgresql_using=f"{column}::json",
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for column, nullable in COLUMNS:
        op.alter_column(
            "batches",
            column,
            existing_type=sa.JSON(),
            type_=postgresql.JSONB(),
            existing_nullable=nullable,
            postgresql_using=f"{column}::jsonb",
        )
