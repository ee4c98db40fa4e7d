"""A document's pages as items: the expansion, in one transaction, and the page lookup.

A document (a PDF, a TIFF) is one item from submit on. The worker that first runs it reads
its page count and calls :meth:`DocumentPages.expand`, which, in one transaction, moves the
document from running (under that worker's lease) to ``expanded``, inserts one queued item
per page, adds them to the batch's ``total_items`` and counts both in the tallies. A worker
that dies before the commit leaves nothing behind (the reaper gives the document back and
another worker expands it); one whose lease moved on changes nothing. In a batch-mode batch
the worker building a shard's file does the same for a document the shard holds
(:meth:`DocumentPages.expand_in_shard`, guarded by the shard's lease): the document leaves
the shard and its pages wait for the shards to come. UNIQUE
(parent_item_id, page) and ``ON CONFLICT DO NOTHING`` keep one item per page even so.

Pages are created due now (``not_before``): the dispatcher sends items with a due time
first, so a document's pages run soon after it is expanded, while the document is still in
the worker's cache, instead of behind every document of the batch not expanded yet.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import Connection, delete, select, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from qocr.models.base import utcnow
from qocr.models.db import EngineBound
from qocr.models.entities import Batch, Item, source_digest
from qocr.models.records import ClaimedItem
from qocr.models.shards import BatchShard, ShardItem
from qocr.models.states import BatchState, ItemState, sources_of
from qocr.models.tallies import TallyKind, add_tallies
from qocr.models.text_caps import CODE_MAX_CHARS, cap

PAGE_MARK = "#page="
# What a document's item ends with when its batch stopped taking work before it expanded.
CANCELLED_CODE = "cancelled"


def page_source(document_source: str, page: int) -> str:
    """The source shown for page ``page`` of a document: ``<source>#page=<n>``."""
    return f"{document_source}{PAGE_MARK}{page}"


def document_source(source: str, page: int) -> str:
    """The document's source, from the source of its page ``page``."""
    return source.removesuffix(f"{PAGE_MARK}{page}")


def page_digest(document_item_id: int, page: int) -> str:
    """A page item's ``source_sha256``: unique per document and page, and never the digest of
    a source a user could list (a NUL is in no path or URL), so no listed source collides."""
    return source_digest(f"\0page\0{document_item_id}\0{page}")


class Expansion(StrEnum):
    """How :meth:`DocumentPages.expand` ended."""

    EXPANDED = "expanded"  # the document is done; its pages are queued items now
    CANCELLED = "cancelled"  # the batch had stopped or been cancelled: no page was added
    LEASE_LOST = "lease_lost"  # another worker holds the document now: nothing changed


@dataclass(frozen=True)
class ExpansionResult:
    outcome: Expansion
    pages_added: int = 0


@dataclass(frozen=True)
class PageRef:
    """A page item's place: its document's item and its page number (from 1)."""

    document_item_id: int
    page: int


class DocumentPages(EngineBound):
    """The queries of a worker that expands a document or renders one of its pages."""

    def page_of(self, item_id: int) -> PageRef | None:
        """The page an item is, or None for an item made from a source at submit."""
        with self.engine.begin() as conn:  # COMMIT keeps prepared statements (result_cache)
            row = conn.execute(
                select(Item.parent_item_id, Item.page).where(
                    Item.id == item_id, Item.parent_item_id.is_not(None)
                )
            ).first()
        if row is None or row.page is None:
            return None
        return PageRef(document_item_id=int(row.parent_item_id), page=int(row.page))

    def expand(self, item: ClaimedItem, pages: Sequence[int]) -> ExpansionResult:
        """End the document ``item`` as expanded and queue one item per page, atomically."""
        return self._expand(item, pages, _held_by_worker(item), in_shard=False)

    def expand_in_shard(
        self, item: ClaimedItem, shard_id: int, shard_token: str, pages: Sequence[int]
    ) -> ExpansionResult:
        """The same for a document queued in a batch-mode shard, held by the worker whose
        shard lease ``shard_token`` is: the document leaves the shard, its pages are free
        items for the shards to come. Another worker holding the shard: nothing changes."""
        return self._expand(item, pages, _held_by_shard(item, shard_id, shard_token), in_shard=True)

    def _expand(
        self, item: ClaimedItem, pages: Sequence[int], held: _Guard, in_shard: bool
    ) -> ExpansionResult:
        now = utcnow()
        with self.engine.begin() as conn:
            # The batch row first, as cancel and stop take it: a cancel that commits first
            # is seen here; one that comes after waits, then cancels these pages too. Locked
            # as the total's UPDATE below will lock it: two expansions that both held it
            # shared while waiting to update it deadlocked (FOR NO KEY UPDATE, which still
            # lets rows that refer to the batch be written meanwhile).
            state = conn.scalar(
                select(Batch.state).where(Batch.id == item.batch_id).with_for_update(key_share=True)
            )
            if state != BatchState.RUNNING:
                return _cancel(conn, item, held, state, now, in_shard)
            moved = conn.scalar(
                held(ItemState.EXPANDED)
                .values(
                    finished_at=now,
                    updated_at=now,
                    last_error_code=None,
                    last_error_message=None,
                )
                .returning(Item.id)
            )
            if moved is None:
                return ExpansionResult(Expansion.LEASE_LOST)
            if in_shard:
                _leave_shard(conn, item)
            added = _insert_pages(conn, item, pages, now)
            conn.execute(
                update(Batch)
                .where(Batch.id == item.batch_id)
                .values(total_items=Batch.total_items + added)
            )
            add_tallies(
                conn,
                item.batch_id,
                item.item_id,
                {(TallyKind.STATE, ItemState.EXPANDED.value): 1, (TallyKind.PAGES, ""): added},
            )
            return ExpansionResult(Expansion.EXPANDED, added)


# The UPDATE that moves the document to a state, only while this worker holds it.
_Guard = Callable[[ItemState], Any]


def _held_by_worker(item: ClaimedItem) -> _Guard:
    """Running under this worker's lease (which ends with the move)."""
    held = Item.lease_token == item.lease_token
    return _guard(item, ItemState.RUNNING, held, lease_token=None, lease_until=None)


def _held_by_shard(item: ClaimedItem, shard_id: int, shard_token: str) -> _Guard:
    """Queued in the shard this worker holds under ``shard_token``."""
    in_shard = (
        select(ShardItem.item_id)
        .join(BatchShard, BatchShard.id == ShardItem.shard_id)
        .where(
            ShardItem.item_id == item.item_id,
            ShardItem.shard_id == shard_id,
            BatchShard.lease_token == shard_token,
        )
        .exists()
    )
    return _guard(item, ItemState.QUEUED, in_shard)


def _guard(item: ClaimedItem, state: ItemState, held: Any, **released: Any) -> _Guard:
    """Moves ``item`` from ``state`` while ``held`` is true, with ``released`` values."""

    def move(target: ItemState) -> Any:
        return (
            update(Item)
            .where(
                Item.id == item.item_id,
                Item.state == state,
                Item.state.in_(sources_of(target)),
                held,
            )
            .values(state=target, dispatched_at=None, **released)
        )

    return move


def _leave_shard(conn: Connection, item: ClaimedItem) -> None:
    """A document that ended in a shard leaves it (its file goes on without it)."""
    conn.execute(delete(ShardItem).where(ShardItem.item_id == item.item_id))


def _cancel(
    conn: Connection,
    item: ClaimedItem,
    held: _Guard,
    state: BatchState | None,
    now: Any,
    in_shard: bool,
) -> ExpansionResult:
    message = f"the batch is {state.value if state else 'gone'}: its pages were not added"
    code = cap(CANCELLED_CODE, CODE_MAX_CHARS)
    moved = conn.scalar(
        held(ItemState.CANCELLED)
        .values(finished_at=now, updated_at=now, last_error_code=code, last_error_message=message)
        .returning(Item.id)
    )
    if moved is None:
        return ExpansionResult(Expansion.LEASE_LOST)
    if in_shard:
        _leave_shard(conn, item)
    add_tallies(
        conn,
        item.batch_id,
        item.item_id,
        {(TallyKind.STATE, ItemState.CANCELLED.value): 1, (TallyKind.ERROR, code): 1},
    )
    return ExpansionResult(Expansion.CANCELLED)


def _insert_pages(conn: Connection, item: ClaimedItem, pages: Sequence[int], now: Any) -> int:
    """Insert the page items that do not exist yet; returns how many were new."""
    if not pages:
        return 0
    dialect_insert: Any = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    rows = [
        {
            "batch_id": item.batch_id,
            "source": page_source(item.source, page),
            "source_sha256": page_digest(item.item_id, page),
            "fingerprint": item.fingerprint,
            "state": ItemState.QUEUED,
            "attempts": 0,
            "not_before": now,
            "created_at": now,
            "updated_at": now,
            "parent_item_id": item.item_id,
            "page": page,
        }
        for page in pages
    ]
    # No conflict target: the arbiter is the partial ux_items_parent_page (the only unique
    # index on items), which a page's row always enters.
    statement = dialect_insert(Item).on_conflict_do_nothing().returning(Item.id)
    return len(conn.execute(statement, rows).all())
