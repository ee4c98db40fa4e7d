"""Batches as a whole: create one with its items, stop, cancel, complete, requeue its failures.

Every write that changes items' states here changes the batch's tallies
(:mod:`models.tallies`) in the same transaction.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import datetime

from sqlalchemy import ColumnElement, Connection, and_, exists, insert, or_, select, update
from sqlalchemy.orm import InstrumentedAttribute

from qocr.models.base import utcnow
from qocr.models.db import EngineBound, rows_changed
from qocr.models.entities import Batch, Item, moved_on, waiting
from qocr.models.new_items import insert_items
from qocr.models.records import BatchSpec, SourceRow
from qocr.models.schedule_sources import record_sources
from qocr.models.states import TERMINAL_ITEM_STATES, BatchState, ItemState, sources_of
from qocr.models.tallies import TallyKind, add_tallies, item_counts
from qocr.models.text_caps import CODE_MAX_CHARS, MESSAGE_MAX_CHARS, cap

OPEN_ITEM_STATES = (ItemState.QUEUED, ItemState.RUNNING)
# Finished items that may go back to the queue (`qocr retry`): failed and cancelled.
REQUEUEABLE_STATES = tuple(
    state for state in sources_of(ItemState.QUEUED) if state in TERMINAL_ITEM_STATES
)


class BatchWrites(EngineBound):
    """The queries that act on a whole batch."""

    def create_batch(self, spec: BatchSpec, rows: Iterable[SourceRow]) -> tuple[int, int]:
        """Insert a batch and its items in one transaction; returns (batch id, item count).

        Rows are streamed (COPY on PostgreSQL, see :mod:`models.new_items`); a source listed
        twice is kept once. A run of an ``only_new`` schedule records its sources
        (:mod:`models.schedule_sources`). An exception raised by the ``rows`` iterator (a
        bad source) rolls everything back: no half-made batch.
        """
        now = utcnow()
        with self.engine.begin() as conn:
            batch_id = conn.execute(
                insert(Batch)
                .values(
                    name=spec.name,
                    api=spec.api,
                    model=spec.model,
                    task=spec.task,
                    prompt=spec.prompt,
                    result_schema=spec.result_schema,
                    options=spec.options,
                    source_options=spec.source_options,
                    schedule_name=spec.schedule_name,
                    scheduled_for=spec.scheduled_for,
                    notify_url=spec.notify_url,
                    idempotency_key=spec.idempotency_key,
                    request_sha256=spec.request_sha256,
                    mode=spec.mode,
                    state=BatchState.RUNNING,
                    created_at=now,
                    updated_at=now,
                )
                .returning(Batch.id)
            ).scalar_one()
            # The batch row goes first: a racing submit with the same idempotency key waits
            # here on the UNIQUE index, and fails before it inserts a million items.
            # The batch's queued count is total_items minus its tallies: the exact count of
            # the rows inserted, duplicates left out.
            total = insert_items(conn, batch_id, rows, now)
            conn.execute(update(Batch).where(Batch.id == batch_id).values(total_items=total))
            if spec.only_new and spec.schedule_name is not None:
                record_sources(conn, spec.schedule_name, batch_id)
        return batch_id, total

    def get_batch(self, batch_id: int) -> Batch | None:
        with self.sessions() as session:
            return session.get(Batch, batch_id)

    def batch_is_open(self, batch_id: int) -> bool:
        """True while the batch has a queued or running item."""
        with self.sessions() as session:
            return bool(session.scalar(select(_has_open_items(batch_id))))

    def counts_by_state(self, batch_id: int) -> dict[ItemState, int]:
        """Items by state, from the batch's tallies: a few rows, whatever the batch size."""
        with self.snapshot() as session:
            return item_counts(session, [batch_id])[batch_id]

    def stop_batch(self, batch_id: int, reason: str, code: str) -> int:
        """Stop a batch after an error that every further call would repeat.

        Its queued items are cancelled with ``code``; returns how many.
        """
        now = utcnow()
        reason = cap(reason, MESSAGE_MAX_CHARS)
        with self.engine.begin() as conn:
            conn.execute(
                update(Batch)
                .where(Batch.id == batch_id, Batch.state == BatchState.RUNNING)
                .values(state=BatchState.STOPPED, stop_reason=reason, finished_at=now)
            )
            return _cancel_queued(conn, batch_id, now, code, reason)

    def cancel_batch(self, batch_id: int) -> int:
        """Cancel a running batch: its queued items stop at once; running ones finish."""
        now = utcnow()
        with self.engine.begin() as conn:
            conn.execute(
                update(Batch)
                .where(Batch.id == batch_id, Batch.state == BatchState.RUNNING)
                .values(state=BatchState.CANCELLED, finished_at=now)
            )
            return _cancel_queued(conn, batch_id, now, "cancelled", "batch cancelled")

    def complete_finished_batches(self) -> list[int]:
        """Mark running batches with no queued or running item left as completed."""
        now = utcnow()
        with self.engine.begin() as conn:
            done = list(
                conn.scalars(
                    select(Batch.id).where(
                        Batch.state == BatchState.RUNNING, ~_has_open_items(Batch.id)
                    )
                )
            )
            if done:
                conn.execute(
                    update(Batch)
                    .where(Batch.id.in_(done), Batch.state == BatchState.RUNNING)
                    .values(state=BatchState.COMPLETED, finished_at=now)
                )
            return done

    def requeue_failed(self, batch_id: int, codes: Sequence[str] | None = None) -> int:
        """Put failed and cancelled items of a batch back in the queue (``qocr retry``)."""
        now = utcnow()
        condition = and_(Item.batch_id == batch_id, Item.state.in_(REQUEUEABLE_STATES))
        if codes:
            condition = and_(condition, Item.last_error_code.in_(list(codes)))
        with self.engine.begin() as conn:
            requeued = 0
            decrements: Counter[tuple[TallyKind, str]] = Counter()
            # One UPDATE per state left, so the codes it returns are what left the tallies.
            for state in REQUEUEABLE_STATES:
                codes_left = conn.scalars(
                    update(Item)
                    .where(condition, Item.state == state)
                    .values(
                        state=ItemState.QUEUED,
                        not_before=None,
                        dispatched_at=None,
                        finished_at=None,
                        updated_at=now,
                    )
                    .returning(Item.last_error_code)
                ).all()
                requeued += len(codes_left)
                decrements[(TallyKind.STATE, state.value)] -= len(codes_left)
                for code in codes_left:
                    decrements[(TallyKind.ERROR, code or "")] -= 1
            add_tallies(conn, batch_id, 0, decrements)
            if requeued:
                conn.execute(
                    update(Batch)
                    .where(Batch.id == batch_id)
                    .values(state=BatchState.RUNNING, finished_at=None, stop_reason=None)
                )
            return requeued


def _has_open_items(
    batch_id: int | ColumnElement[int] | InstrumentedAttribute[int],
) -> ColumnElement[bool]:
    """Whether the batch has a queued or running item: IN (queued, running), not NOT IN
    (terminal states), asked of the two indexes that hold them, so each is a lookup or
    two, not a scan of the batch's finished items."""
    return or_(
        exists().where(Item.batch_id == batch_id, waiting()),
        exists().where(Item.batch_id == batch_id, Item.state.in_(OPEN_ITEM_STATES), moved_on()),
    )


def _cancel_queued(conn: Connection, batch_id: int, now: datetime, code: str, message: str) -> int:
    code = cap(code, CODE_MAX_CHARS)
    # waiting() or moved_on() is always true: it names the two indexes that hold a batch's
    # queued items, for a BitmapOr of both. One statement, so an item that moves between
    # the two meanwhile (dispatched, or given back by the reaper) is seen once, not missed.
    result = conn.execute(
        update(Item)
        .where(
            Item.batch_id == batch_id,
            Item.state == ItemState.QUEUED,
            or_(waiting(), moved_on()),
        )
        .values(
            state=ItemState.CANCELLED,
            last_error_code=code,
            last_error_message=message,
            dispatched_at=None,
            finished_at=now,
            updated_at=now,
        )
    )
    cancelled = rows_changed(result)
    add_tallies(
        conn,
        batch_id,
        0,
        {
            (TallyKind.STATE, ItemState.CANCELLED.value): cancelled,
            (TallyKind.ERROR, code): cancelled,
        },
    )
    return cancelled
