"""A new batch's items, written in bulk: COPY on PostgreSQL, chunked executemany elsewhere.

Rows are streamed from the caller's iterator, so memory stays bounded whatever the
manifest's length, and ids follow the rows' order. Items have no unique index (a per-row
cost of seconds per million, migration 0011): a source listed twice is deleted after the
rows are written, by one statement over the batch that keeps the first listing (the lowest
id). That statement reads and sorts the whole batch (~2.5 s a million on PostgreSQL), so
it runs only when :class:`RepeatWatch` saw a source that may be listed twice. Everything
runs on the caller's connection, inside its transaction: an error rolls the whole batch
back.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from itertools import islice
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, delete, func, insert, select, text

from qocr.models.db import rows_changed
from qocr.models.entities import Item, source_digest, waiting
from qocr.models.records import SourceRow
from qocr.models.states import ItemState

if TYPE_CHECKING:
    from psycopg import Cursor

# Rows per executemany on SQLite (500 to 100,000 measured the same: bench/RESULTS.md).
SQLITE_CHUNK = 5_000
# The other columns take their server defaults (queued, 0 attempts, the transaction's time).
COPY_ITEMS = "COPY items (batch_id, source, source_sha256, fingerprint) FROM STDIN"
# Sources a RepeatWatch keeps (~75 bytes each); past them the database looks for repeats.
WATCHED_SOURCES = 1_000_000
# Enough for the dedupe's sort of a million digests to stay in memory; larger batches spill
# to disk, they do not fail. Until the transaction ends.
DEDUPE_WORK_MEM = text("SET LOCAL work_mem = '256MB'")


def insert_items(conn: Connection, batch_id: int, rows: Iterable[SourceRow], now: datetime) -> int:
    """Insert ``rows`` as queued items of ``batch_id``, each source once; returns how many.

    An exception raised by ``rows`` propagates as it was raised; the caller's transaction
    must then roll back (part of the rows may have been written).
    """
    watch = RepeatWatch(WATCHED_SOURCES)
    if conn.dialect.name == "postgresql":
        written = _copy_items(conn, batch_id, rows, watch)
    else:
        written = _insert_in_chunks(conn, batch_id, rows, now, watch)
    if not watch.maybe_repeated:
        return written
    if conn.dialect.name == "postgresql":
        conn.execute(DEDUPE_WORK_MEM)
    return written - delete_duplicates(conn, batch_id)


class RepeatWatch:
    """Whether a batch's sources may hold one listed twice, told from their digests as they pass.

    It keeps the Python hash of each digest (64 bits), up to ``limit`` of them: a digest seen
    twice always gives the same hash, so "no repeat" is exact; a hash seen twice is a repeat,
    or two digests sharing 64 bits (odds of ~3e-8 at a million sources), and the database
    then decides. Past ``limit`` sources it stops keeping hashes (memory stays bounded) and
    answers "maybe".
    """

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._hashes: set[int] | None = set()

    @property
    def maybe_repeated(self) -> bool:
        return self._hashes is None

    def see(self, digest: str) -> None:
        hashes = self._hashes
        if hashes is None:
            return
        key = hash(digest)
        if key in hashes or len(hashes) >= self._limit:
            self._hashes = None  # the answer is "maybe" from now on: free the memory
        else:
            hashes.add(key)


def delete_duplicates(conn: Connection, batch_id: int) -> int:
    """Delete every item of the batch whose source an item with a lower id has; how many."""
    if conn.dialect.name == "postgresql":
        # Each digest's listings numbered in id order; all but the first go. The plan cannot
        # turn quadratic whatever the planner guesses of a batch it has no statistics for
        # yet (a join against the repeats' aggregate became a nested loop re-running the
        # aggregate per row: 80 s for 20,000 items): one ordered pass over the batch, then
        # a primary-key lookup per repeat. waiting(): a new batch's items all wait in the
        # queue, and the index holding exactly those finds them.
        listings = (
            select(
                Item.id,
                func.row_number()
                .over(partition_by=Item.source_sha256, order_by=Item.id)
                .label("listing"),
            )
            .where(Item.batch_id == batch_id, waiting())
            .subquery()
        )
        statement: Any = delete(Item).where(
            Item.id.in_(select(listings.c.id).where(listings.c.listing > 1))
        )
    else:  # SQLite has no DELETE … USING
        first = select(func.min(Item.id)).where(Item.batch_id == batch_id)
        statement = delete(Item).where(
            Item.batch_id == batch_id, Item.id.not_in(first.group_by(Item.source_sha256))
        )
    return rows_changed(conn.execute(statement))


def _copy_items(
    conn: Connection, batch_id: int, rows: Iterable[SourceRow], watch: RepeatWatch
) -> int:
    # The driver's (psycopg 3) connection is in the transaction SQLAlchemy began.
    driver = conn.connection.driver_connection
    assert driver is not None
    with driver.cursor() as cursor:
        written, failure = _copy_rows(cursor, batch_id, rows, watch)
    if failure is not None:
        raise failure
    return written


def _copy_rows(
    cursor: Cursor[Any], batch_id: int, rows: Iterable[SourceRow], watch: RepeatWatch
) -> tuple[int, Exception | None]:
    """COPY ``rows`` into items; returns how many, and what the iterator raised, if anything.

    That exception is kept out of the COPY block: psycopg would send its text (a source,
    maybe a presigned URL) to the server to abort the COPY, and the server would log it.
    The COPY ends normally instead, and the caller raises the exception.
    """
    failures: list[Exception] = []
    written = 0
    with cursor.copy(COPY_ITEMS) as copy:
        # write_row escapes tabs, newlines and backslashes for COPY's text format.
        for row in _until_failure(rows, failures):
            digest = source_digest(row.source)
            watch.see(digest)
            copy.write_row((batch_id, row.source, digest, row.fingerprint))
            written += 1
    return written, failures[0] if failures else None


def _until_failure(rows: Iterable[SourceRow], failures: list[Exception]) -> Iterator[SourceRow]:
    try:
        yield from rows
    except Exception as exc:
        failures.append(exc)


def _insert_in_chunks(
    conn: Connection, batch_id: int, rows: Iterable[SourceRow], now: datetime, watch: RepeatWatch
) -> int:
    statement = insert(Item)
    common = {
        "batch_id": batch_id,
        "state": ItemState.QUEUED,
        "attempts": 0,
        "created_at": now,
        "updated_at": now,
    }
    written = 0
    iterator = iter(rows)
    while chunk := list(islice(iterator, SQLITE_CHUNK)):
        values = []
        for row in chunk:
            digest = source_digest(row.source)
            watch.see(digest)
            values.append(
                {
                    **common,
                    "source": row.source,
                    "source_sha256": digest,
                    "fingerprint": row.fingerprint,
                }
            )
        conn.execute(statement, values)
        written += len(chunk)
    return written
