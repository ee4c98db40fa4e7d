"""Per-batch running totals, kept in the same transaction as the transitions they count.

``qocr status`` on a million-item batch must not read a million rows: every terminal
transition (an item succeeds, fails or is cancelled, or ``qocr retry`` takes it back) adds
its share here, so a summary reads a few dozen rows whatever the batch size. Rows are
spread over ``SHARDS`` per key so concurrent workers rarely wait on one row lock.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

from sqlalchemy import BigInteger, Connection, ForeignKey, Integer, String, Text, func, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Mapped, Session, mapped_column

from qocr.models.base import Base
from qocr.models.entities import Batch, Item
from qocr.models.states import TERMINAL_ITEM_STATES, ItemState
from qocr.models.text_caps import CODE_MAX_CHARS, cap

SHARDS = 8


class TallyKind(StrEnum):
    """What a tally counts; ``key`` says of what."""

    STATE = "state"  # key: a terminal item state
    FINISH = "finish"  # key: finish_reason ("" when the answer had none)
    ERROR = "error"  # key: the last error code of failed and cancelled items
    INPUT_TOKENS = "input"  # key: model
    OUTPUT_TOKENS = "output"  # key: model
    IMAGE_TOKENS = "image"  # key: model
    TOTAL_TOKENS = "total"  # key: model
    # Results reused from the cache (key ""), and the tokens their originals were billed
    # (key: model), which the batch did not pay again.
    CACHED = "cached"
    SAVED_INPUT_TOKENS = "saved_input"
    SAVED_OUTPUT_TOKENS = "saved_output"
    # Page items added by expanding documents (key ""): documents = total - pages.
    PAGES = "pages"


Increments = Mapping[tuple[TallyKind, str], int]


class BatchTally(Base):
    __tablename__ = "batch_tallies"

    batch_id: Mapped[int] = mapped_column(
        ForeignKey("batches.id", ondelete="CASCADE"), primary_key=True
    )
    kind: Mapped[str] = mapped_column(String(16), primary_key=True)
    # A code, finish reason or model as the provider sent it, capped (text_caps) to stay a
    # valid btree entry.
    key: Mapped[str] = mapped_column(Text, primary_key=True)
    shard: Mapped[int] = mapped_column(Integer, primary_key=True)
    value: Mapped[int] = mapped_column(BigInteger().with_variant(Integer(), "sqlite"))


def add_tallies(connection: Connection, batch_id: int, shard: int, increments: Increments) -> None:
    """Add ``increments`` to the batch's tallies (one upsert, run for every key)."""
    rows = [
        {
            "batch_id": batch_id,
            "kind": kind.value,
            "key": cap(key, CODE_MAX_CHARS),
            "shard": shard % SHARDS,
            "value": amount,
        }
        for (kind, key), amount in increments.items()
        if amount
    ]
    if rows:
        connection.execute(_UPSERTS[connection.dialect.name], rows)


def _upsert(insert: Any) -> Any:
    statement = insert(BatchTally)
    return statement.on_conflict_do_update(
        index_elements=["batch_id", "kind", "key", "shard"],
        set_={"value": BatchTally.value + statement.excluded.value},
    )


# One statement per dialect, built once, run with one set of parameters per key.
_UPSERTS = {"postgresql": _upsert(pg_insert), "sqlite": _upsert(sqlite_insert)}


def read_tallies(
    session: Session | Connection, batch_ids: list[int]
) -> dict[int, dict[tuple[TallyKind, str], int]]:
    """Every tally of the given batches, summed over shards."""
    totals: dict[int, dict[tuple[TallyKind, str], int]] = {batch_id: {} for batch_id in batch_ids}
    if not batch_ids:
        return totals
    rows = session.execute(
        select(BatchTally.batch_id, BatchTally.kind, BatchTally.key, func.sum(BatchTally.value))
        .where(BatchTally.batch_id.in_(batch_ids))
        .group_by(BatchTally.batch_id, BatchTally.kind, BatchTally.key)
    )
    for batch_id, kind, key, value in rows:
        if value:
            totals[batch_id][(TallyKind(kind), key)] = int(value)
    return totals


def item_counts(
    session: Session | Connection, batch_ids: list[int]
) -> dict[int, dict[ItemState, int]]:
    """Items by state for each batch, from the tallies and the (few) running items.

    Finished states come from the tallies; running items are counted on the index (there
    are at most a window's worth); queued is what is left of the batch's total.
    """
    counts: dict[int, dict[ItemState, int]] = {
        batch_id: {state: 0 for state in ItemState} for batch_id in batch_ids
    }
    if not batch_ids:
        return counts
    totals = {
        batch_id: total
        for batch_id, total in session.execute(
            select(Batch.id, Batch.total_items).where(Batch.id.in_(batch_ids))
        )
    }
    running = {
        batch_id: count
        for batch_id, count in session.execute(
            select(Item.batch_id, func.count())
            .where(Item.batch_id.in_(batch_ids), Item.state == ItemState.RUNNING)
            .group_by(Item.batch_id)
        )
    }
    for batch_id, tallies in read_tallies(session, batch_ids).items():
        batch_counts = counts[batch_id]
        for state in TERMINAL_ITEM_STATES:
            batch_counts[state] = tallies.get((TallyKind.STATE, state.value), 0)
        batch_counts[ItemState.RUNNING] = int(running.get(batch_id, 0))
        finished = sum(batch_counts[state] for state in TERMINAL_ITEM_STATES)
        batch_counts[ItemState.QUEUED] = (
            int(totals.get(batch_id, 0)) - finished - batch_counts[ItemState.RUNNING]
        )
    return counts
