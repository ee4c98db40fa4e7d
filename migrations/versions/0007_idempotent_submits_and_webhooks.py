"""idempotent submits and completion webhooks

A batch may carry the idempotency key it was submitted with (UNIQUE: a second submit with
the key finds the batch, however the two race), the sha256 of the request it was made
for, and the URL its end is POSTed to. Submits that made no batch are kept in
``submit_rejections`` (looked up by key); each batch end with a URL is one row of
``webhook_deliveries``, claimed by its sender under a lease.

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

NOTIFY_SET = "notify_url IS NOT NULL"
PENDING = "state = 'pending'"


def upgrade() -> None:
    with op.batch_alter_table("batches") as batch_op:
        batch_op.add_column(sa.Column("idempotency_key", sa.Text(), nullable=True))
        batch_op.add_column(sa.Column("request_sha256", sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column("notify_url", sa.Text(), nullable=True))
        batch_op.create_unique_constraint(
            op.f("uq_batches_idempotency_key"), ["idempotency_key"]
        )
        batch_op.create_index(
            "ix_batches_notify_finished",
            ["finished_at"],
            unique=False,
            sqlite_where=sa.text(NOTIFY_SET),
            postgresql_where=sa.text(NOTIFY_SET),
        )

    op.create_table(
        "submit_rejections",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("idempotency_key", sa.Text(), nullable=False),
        sa.Column("request_sha256", sa.String(length=64), nullable=True),
        sa.Column("error_code", sa.Text(), nullable=False),
        sa.Column("error_message", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_submit_rejections")),
    )
    op.create_index(
        "ix_submit_rejections_key", "submit_rejections", ["idempotency_key", "id"], unique=False
    )

    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("delivery_id", sa.String(length=32), nullable=False),
        sa.Column("batch_id", sa.Integer(), nullable=False),
        sa.Column("batch_finished_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("event", sa.String(length=16), nullable=False),
        sa.Column("url", sa.Text(), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column(
            "state",
            sa.Enum(
                "pending",
                "delivered",
                "failed",
                name="webhook_delivery_state",
                native_enum=False,
                create_constraint=True,
                length=16,
            ),
            nullable=False,
        ),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("lease_token", sa.String(length=32), nullable=True),
        sa.Column("lease_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_http_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["batches.id"],
            name=op.f("fk_webhook_deliveries_batch_id_batches"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_webhook_deliveries")),
        sa.UniqueConstraint(
            "batch_id",
            "batch_finished_at",
            name=op.f("uq_webhook_deliveries_batch_id_batch_finished_at"),
        ),
    )
    op.create_index(
        "ix_webhook_deliveries_batch_id", "webhook_deliveries", ["batch_id"], unique=False
    )
    op.create_index(
        "ix_webhook_deliveries_due",
        "webhook_deliveries",
        ["next_attempt_at"],
        unique=False,
        sqlite_where=sa.text(PENDING),
        postgresql_where=sa.text(PENDING),
    )


def downgrade() -> None:
    op.drop_index(
        "ix_webhook_deliveries_due",
        table_name="webhook_deliveries",
        sqlite_where=sa.text(PENDING),
        postgresql_where=sa.text(PENDING),
    )
    op.drop_index("ix_webhook_deliveries_batch_id", table_name="webhook_deliveries")
    op.drop_table("webhook_deliveries")
    op.drop_index("ix_submit_rejections_key", table_name="submit_rejections")
    op.drop_table("submit_rejections")
    with op.batch_alter_table("batches") as batch_op:
        batch_op.drop_index(
            "ix_batches_notify_finished",
            sqlite_where=sa.text(NOTIFY_SET),
            postgresql_where=sa.text(NOTIFY_SET),
        )
        batch_op.drop_constraint(op.f("uq_batches_idempotency_key"), type_="unique")
        batch_op.drop_column("notify_url")
        batch_op.drop_column("request_sha256")
        batch_op.drop_column("idempotency_key")
