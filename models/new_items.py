"""A new batch's items, written in bulk: COPY on PostgreSQL, chunked executemany elsewhere.

Rows are streamed from the caller's iterator, so memory stays flat whatever the manifest's
length, and ids follow the rows' order. Items have no unique index (a per-row cost of
seconds per million, migration 0011): a source listed twice is deleted after the rows are
written, by one statement over the batch that keeps the first listing (the lowest id).
Everything runs on the caller's connection, inside its transaction: an error rolls the
whole batch back.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from itertools import islice
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, delete, func, insert, select, text

from qocr.models.db import rows_changed
from qocr.models.entities import Item, source_digest
from qocr.models.records import SourceRow
from qocr.models.states import ItemState

if TYPE_CHECKING:
    from psycopg import Cursor

# Rows per executemany on SQLite (500 to 100,000 measured the same: bench/RESULTS.md).
SQLITE_CHUNK = 5_000
# The other columns take their server defaults (queued, 0 attempts, the transaction's time).
COPY_ITEMS = "COPY items (batch_id, source, source_sha256, fingerprint) FROM STDIN"
# Enough for the duplicate search's hash aggregate over a million digests to stay in memory
# (~150 MB); larger batches spill to disk, they do not fail. Until the transaction ends.
DEDUPE_WORK_MEM = text("SET LOCAL work_mem = '256MB'")


def insert_items(conn: Connection, batch_id: int, rows: Iterable[SourceRow], now: datetime) -> int:
    """Insert ``rows`` as queued items of ``batch_id``, each source once; returns how many.

    An exception raised by ``rows`` propagates as it was raised; the caller's transaction
    must then roll back (part of the rows may have been written).
    """
    if conn.dialect.name == "postgresql":
        written = _copy_items(conn, batch_id, rows)
        conn.execute(DEDUPE_WORK_MEM)
    else:
        written = _insert_in_chunks(conn, batch_id, rows, now)
    return written - delete_duplicates(conn, batch_id)


def delete_duplicates(conn: Connection, batch_id: int) -> int:
    """Delete every item of the batch whose source an item with a lower id has; how many."""
    if conn.dialect.name == "postgresql":
        # Hash aggregate, then a hash join on its (usually empty) output: when no source is
        # listed twice, the join ends before it reads the batch a second time.
        repeated = (
            select(Item.source_sha256, func.min(Item.id).label("first_id"))
            .where(Item.batch_id == batch_id)
            .group_by(Item.source_sha256)
            .having(func.count() > 1)
            .subquery()
        )
        statement: Any = delete(Item).where(
            Item.batch_id == batch_id,
            Item.source_sha256 == repeated.c.source_sha256,
            Item.id > repeated.c.first_id,
        )
    else:  # SQLite has no DELETE … USING
        first = select(func.min(Item.id)).where(Item.batch_id == batch_id)
        statement = delete(Item).where(
            Item.batch_id == batch_id, Item.id.not_in(first.group_by(Item.source_sha256))
        )
    return rows_changed(conn.execute(statement))


def _copy_items(conn: Connection, batch_id: int, rows: Iterable[SourceRow]) -> int:
    # The driver's (psycopg 3) connection is in the transaction SQLAlchemy began.
    driver = conn.connection.driver_connection
    assert driver is not None
    with driver.cursor() as cursor:
        written, failure = _copy_rows(cursor, batch_id, rows)
    if failure is not None:
        raise failure
    return written


def _copy_rows(
    cursor: Cursor[Any], batch_id: int, rows: Iterable[SourceRow]
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
            copy.write_row((batch_id, row.source, source_digest(row.source), row.fingerprint))
            written += 1
    return written, failures[0] if failures else None


def _until_failure(rows: Iterable[SourceRow], failures: list[Exception]) -> Iterator[SourceRow]:
    try:
        yield from rows
    except Exception as exc:
        failures.append(exc)


def _insert_in_chunks(
    conn: Connection, batch_id: int, rows: Iterable[SourceRow], now: datetime
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
        conn.execute(
            statement,
            [
                {
                    **common,
                    "source": row.source,
                    "source_sha256": source_digest(row.source),
                    "fingerprint": row.fingerprint,
                }
                for row in chunk
            ],
        )
        written += len(chunk)
    return written
