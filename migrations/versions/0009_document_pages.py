"""document pages: a document's pages are items of their own; a document ends `expanded`

A PDF or multi-page TIFF is one item at submit (no download: a million-line manifest is
as fast as before). The worker that first runs it reads its page count and adds one item
per page to the same batch, in the transaction that moves the document to the new state
``expanded`` (models/document_pages.py). A page item names its document
(``parent_item_id``) and its page number (``page``, from 1); UNIQUE (parent_item_id, page)
keeps one item per page however often an expansion is tried. The index is partial: the
items made at submit (every item so far) add no entry to it.

Downgrading refuses while documents or pages exist: the old schema cannot hold them, and
dropping them would lose paid results.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-30
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BIG = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
OLD_STATES = ("queued", "running", "succeeded", "failed", "cancelled")
NEW_STATES = (*OLD_STATES, "expanded")
PAGES_ONLY = "parent_item_id IS NOT NULL"


def _state_check(states: Sequence[str]) -> str:
    return "state IN (" + ", ".join(f"'{value}'" for value in states) + ")"


def upgrade() -> None:
    with op.batch_alter_table("items") as batch_op:
        batch_op.drop_constraint("item_state", type_="check")
        batch_op.create_check_constraint("item_state", _state_check(NEW_STATES))
        batch_op.add_column(sa.Column("parent_item_id", BIG, nullable=True))
        batch_op.add_column(sa.Column("page", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            op.f("fk_items_parent_item_id_items"),
            "items",
            ["parent_item_id"],
            ["id"],
            ondelete="CASCADE",
        )
        batch_op.create_index(
            "ux_items_parent_page",
            ["parent_item_id", "page"],
            unique=True,
            sqlite_where=sa.text(PAGES_ONLY),
            postgresql_where=sa.text(PAGES_ONLY),
        )


def downgrade() -> None:
    # The old schema cannot hold a document's pages, nor a document that has them: refuse
    # rather than lose results (and the batch tallies that count them).
    pages = op.get_bind().scalar(
        sa.text("SELECT count(*) FROM items WHERE parent_item_id IS NOT NULL OR state = 'expanded'")
    )
    if pages:
        raise RuntimeError(
            f"{pages} document or page items exist; delete their batches before downgrading "
            "below revision 0009"
        )
    with op.batch_alter_table("items") as batch_op:
        batch_op.drop_index(
            "ux_items_parent_page",
            sqlite_where=sa.text(PAGES_ONLY),
            postgresql_where=sa.text(PAGES_ONLY),
        )
        batch_op.drop_constraint(op.f("fk_items_parent_item_id_items"), type_="foreignkey")
        batch_op.drop_column("page")
        batch_op.drop_column("parent_item_id")
        batch_op.drop_constraint("item_state", type_="check")
        batch_op.create_check_constraint("item_state", _state_check(OLD_STATES))
