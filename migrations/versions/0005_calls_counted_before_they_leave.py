"""calls counted before they leave: in-flight and abandoned attempts; leases on received messages

Every call to the provider is now an attempt row written *before* the request leaves the
worker (outcome ``in_flight``, no ``ended_at`` yet), in the same transaction that counts it
on the item; the outcome is filled in when the call returns. A worker that dies mid-call
leaves the row in flight, and the reaper marks it ``abandoned``. So the number of calls per
item is bounded by ``QOCR_MAX_ATTEMPTS`` whatever happens after the request leaves.
``called`` tells the tries that sent a request from those that ended before one (a fetch
that failed, a worker that died loading the image): both count toward the attempts.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_OUTCOMES = ("succeeded", "retry", "failed", "stopped", "discarded")
NEW_OUTCOMES = (*OLD_OUTCOMES, "in_flight", "abandoned")


def _outcome_check(outcomes: Sequence[str]) -> str:
    return "outcome IN (" + ", ".join(f"'{value}'" for value in outcomes) + ")"


def upgrade() -> None:
    with op.batch_alter_table("attempts") as batch_op:
        batch_op.drop_constraint("attempt_outcome", type_="check")
        batch_op.create_check_constraint("attempt_outcome", _outcome_check(NEW_OUTCOMES))
        batch_op.alter_column("ended_at", existing_type=sa.DateTime(timezone=True), nullable=True)
        batch_op.add_column(
            sa.Column("called", sa.Boolean(), nullable=False, server_default=sa.true())
        )


def downgrade() -> None:
    # A call still in flight (or abandoned) has no place in the old schema: it ended
    # unknown, which the old schema can only call a retry.
    op.execute(
        "UPDATE attempts SET outcome = 'retry', ended_at = COALESCE(ended_at, started_at) "
        "WHERE outcome IN ('in_flight', 'abandoned')"
    )
    with op.batch_alter_table("attempts") as batch_op:
        batch_op.drop_column("called")
        batch_op.drop_constraint("attempt_outcome", type_="check")
        batch_op.create_check_constraint("attempt_outcome", _outcome_check(OLD_OUTCOMES))
        batch_op.alter_column("ended_at", existing_type=sa.DateTime(timezone=True), nullable=False)
