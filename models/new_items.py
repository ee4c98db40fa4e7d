"""A new batch's items, written in bulk: COPY on PostgreSQL, chunked executemany elsewhere.

Rows are streamed from the caller's iterator, so memory stays flat whatever the manifest's
length. A source listed twice is kept once, by the database: the unique
``(batch_id, source_sha256)`` and ``ON CONFLICT DO NOTHING``. Everything runs on the
caller's connection, inside its transaction: an error rolls the whole batch back.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from datetime import datetime
from itertools import islice
from typing import TYPE_CHECKING, Any

from sqlalchemy import Connection, Integer, Text, bindparam, column, insert, select, table
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from qocr.models.base import UTCDateTime
from qocr.models.db import rows_changed
from qocr.models.entities import Item, source_digest
from qocr.models.records import SourceRow
from qocr.models.states import ItemState

if TYPE_CHECKING:
    from psycopg import Cursor

# Rows per executemany on SQLite (500 to 100,000 measured the same: bench/RESULTS.md).
SQLITE_CHUNK = 5_000
UNIQUE_SOURCE = ["batch_id", "source_sha256"]

# The COPY target: a temporary table without indexes (cheap to fill, no WAL), dropped when
# the transaction ends. COPY cannot skip duplicates; the INSERT from it can.
_STAGED = table(
    "qocr_new_items",
    column("source", Text),
    column("source_sha256", Text),
    column("fingerprint", Text),
    schema="pg_temp",
)
_CREATE_STAGED = (
    "CREATE TEMPORARY TABLE qocr_new_items"
    " (source text NOT NULL, source_sha256 text NOT NULL, fingerprint text) ON COMMIT DROP"
)
_COPY_STAGED = "COPY pg_temp.qocr_new_items (source, source_sha256, fingerprint) FROM STDIN"
_ITEM_COLUMNS = [
    "batch_id",
    "source",
    "source_sha256",
    "fingerprint",
    "state",
    "attempts",
    "created_at",
    "updated_at",
]
# A temporary table is never scanned in parallel nor from a synchronized start, so this
# SELECT reads rows in the order COPY wrote them: item ids follow the sources' order.
INSERT_STAGED = (
    pg_insert(Item)
    .from_select(
        _ITEM_COLUMNS,
        select(
            bindparam("batch_id", type_=Integer),
            _STAGED.c.source,
            _STAGED.c.source_sha256,
            _STAGED.c.fingerprint,
            bindparam("state", type_=Item.__table__.c.state.type),
            bindparam("attempts", type_=Integer),
            bindparam("created_at", type_=UTCDateTime),
            bindparam("updated_at", type_=UTCDateTime),
        ),
    )
    .on_conflict_do_nothing(index_elements=UNIQUE_SOURCE)
    # rowcount of an INSERT is kept only when asked: it is the count of new items.
    .execution_options(preserve_rowcount=True)
)


def insert_items(conn: Connection, batch_id: int, rows: Iterable[SourceRow], now: datetime) -> int:
    """Insert ``rows`` as queued items of ``batch_id``; returns how many were new.

    An exception raised by ``rows`` propagates as it was raised; the caller's transaction
    must then roll back (part of the rows may have been written).
    """
    if conn.dialect.name == "postgresql":
        return _copy_items(conn, batch_id, rows, now)
    return _insert_in_chunks(conn, batch_id, rows, now)


def _item_values(batch_id: int, now: datetime) -> dict[str, Any]:
    return {
        "batch_id": batch_id,
        "state": ItemState.QUEUED,
        "attempts": 0,
        "created_at": now,
        "updated_at": now,
    }


def _copy_items(conn: Connection, batch_id: int, rows: Iterable[SourceRow], now: datetime) -> int:
    # The driver's (psycopg 3) connection is in the transaction SQLAlchemy began.
    driver = conn.connection.driver_connection
    assert driver is not None
    with driver.cursor() as cursor:
        cursor.execute(_CREATE_STAGED)
        failure = _copy_staged(cursor, rows)
    if failure is not None:
        raise failure
    return rows_changed(conn.execute(INSERT_STAGED, _item_values(batch_id, now)))


def _copy_staged(cursor: Cursor[Any], rows: Iterable[SourceRow]) -> Exception | None:
    """COPY ``rows`` into the staging table; returns what the iterator raised, if anything.

    That exception is kept out of the COPY block: psycopg would send its text (a source,
    maybe a presigned URL) to the server to abort the COPY, and the server would log it.
    The COPY ends normally instead, and the caller raises the exception.
    """
    failures: list[Exception] = []
    with cursor.copy(_COPY_STAGED) as copy:
        # write_row escapes tabs, newlines and backslashes for COPY's text format.
        for row in _until_failure(rows, failures):
            copy.write_row((row.source, source_digest(row.source), row.fingerprint))
    return failures[0] if failures else None


def _until_failure(rows: Iterable[SourceRow], failures: list[Exception]) -> Iterator[SourceRow]:
    try:
        yield from rows
    except Exception as exc:
        failures.append(exc)


def _insert_in_chunks(
    conn: Connection, batch_id: int, rows: Iterable[SourceRow], now: datetime
) -> int:
    if conn.dialect.name == "sqlite":
        statement: Any = sqlite_insert(Item).on_conflict_do_nothing(index_elements=UNIQUE_SOURCE)
    else:
        statement = insert(Item)
    # sqlite3 sums executemany's changes; a row skipped by DO NOTHING changes nothing.
    statement = statement.execution_options(preserve_rowcount=True)
    common = _item_values(batch_id, now)
    inserted = 0
    iterator = iter(rows)
    while chunk := list(islice(iterator, SQLITE_CHUNK)):
        values = [
            {
                **common,
                "source": row.source,
                "source_sha256": source_digest(row.source),
                "fingerprint": row.fingerprint,
            }
            for row in chunk
        ]
        inserted += rows_changed(conn.execute(statement, values))
    return inserted
