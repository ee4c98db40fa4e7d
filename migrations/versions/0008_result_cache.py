"""result cache: reused results point at the paid one; attempts may be `cached`

A result reused from the cache (worker/cache.py) names the item whose paid result it
copies (``cached_from``) and keeps that result's token counts in ``original_*`` columns;
its own token columns are 0. Its attempt ends ``cached`` (no call was made). The cache's
lookup index becomes partial, over paid results only, with their creation time: a key
reused a thousand times is still one index probe, newest first.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
OLD_OUTCOMES = (
    "succeeded",
    "retry",
    "failed",
    "stopped",
    "discarded",
    "in_flight",
    "abandoned",
)
NEW_OUTCOMES = (*OLD_OUTCOMES, "cached")
ORIGINAL_COLUMNS = (
    "original_input_tokens",
    "original_output_tokens",
    "original_image_tokens",
    "original_total_tokens",
)
PAID = "cached_from IS NULL"


def _outcome_check(outcomes: Sequence[str]) -> str:
    return "outcome IN (" + ", ".join(f"'{value}'" for value in outcomes) + ")"


def upgrade() -> None:
    with op.batch_alter_table("results") as batch_op:
        batch_op.add_column(sa.Column("cached_from", BIG, nullable=True))
        for name in ORIGINAL_COLUMNS:
            batch_op.add_column(sa.Column(name, sa.Integer(), nullable=True))
        batch_op.drop_index("ix_results_cache_key")
        batch_op.create_index(
            "ix_results_cache_key",
            ["image_sha256", "options_fingerprint", "created_at"],
            unique=False,
            sqlite_where=sa.text(PAID),
            postgresql_where=sa.text(PAID),
        )
    with op.batch_alter_table("attempts") as batch_op:
        batch_op.drop_constraint("attempt_outcome", type_="check")
        batch_op.create_check_constraint("attempt_outcome", _outcome_check(NEW_OUTCOMES))


def downgrade() -> None:
    # The old schema has no try without a call that succeeded: a cached try becomes a
    # succeeded one that made no call, which is what it was.
    op.execute("UPDATE attempts SET outcome = 'succeeded' WHERE outcome = 'cached'")
    with op.batch_alter_table("attempts") as batch_op:
        batch_op.drop_constraint("attempt_outcome", type_="check")
        batch_op.create_check_constraint("attempt_outcome", _outcome_check(OLD_OUTCOMES))
    with op.batch_alter_table("results") as batch_op:
        batch_op.drop_index(
            "ix_results_cache_key", sqlite_where=sa.text(PAID), postgresql_where=sa.text(PAID)
        )
        batch_op.create_index(
            "ix_results_cache_key", ["image_sha256", "options_fingerprint"], unique=False
        )
        for name in reversed(ORIGINAL_COLUMNS):
            batch_op.drop_column(name)
        batch_op.drop_column("cached_from")
