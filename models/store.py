"""The store: every query the pipeline makes, each a short transaction.

Item transitions are single conditional UPDATEs whose WHERE clause names the states the item
may leave (from ``models.states.ITEM_TRANSITIONS``) and, for a running item, the lease token
of the worker that holds it. A worker whose lease moved on can therefore never overwrite
what another worker did: its update changes no row, and it learns so from the row count.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from itertools import islice
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    and_,
    bindparam,
    exists,
    func,
    insert,
    or_,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Session

from qocr.models import tallies
from qocr.models.base import utcnow
from qocr.models.db import make_sessionmaker
from qocr.models.entities import Attempt, Batch, Item, Result
from qocr.models.states import (
    TERMINAL_ITEM_STATES,
    AttemptOutcome,
    BatchState,
    ItemState,
    sources_of,
)
from qocr.models.tallies import TallyKind

INSERT_CHUNK = 5_000
OPEN_ITEM_STATES = (ItemState.QUEUED, ItemState.RUNNING)
# The per-item statements, built once: constructing and cache-keying a statement on every
# call cost more CPU than executing it (bench/overhead.py).
_CLAIM = (
    update(Item)
    .where(
        Item.id == bindparam("item_id"),
        Item.state.in_(sources_of(ItemState.RUNNING)),
        or_(Item.not_before.is_(None), Item.not_before <= bindparam("now")),
    )
    .values(
        state=ItemState.RUNNING,
        lease_token=bindparam("token"),
        lease_until=bindparam("lease_until"),
        dispatched_at=None,
        updated_at=bindparam("now"),
    )
    .returning(Item.id, Item.batch_id, Item.source, Item.fingerprint, Item.attempts)
)
_INSERT_ATTEMPT = insert(Attempt)
_INSERT_RESULT = insert(Result)

# Finished items that may go back to the queue (`qocr retry`): failed and cancelled.
REQUEUEABLE_STATES = tuple(
    state for state in sources_of(ItemState.QUEUED) if state in TERMINAL_ITEM_STATES
)


@dataclass(frozen=True)
class BatchSpec:
    """What a new batch asks of the model, and where it came from."""

    name: str
    api: str
    model: str
    options: dict[str, Any]
    task: str | None = None
    prompt: str | None = None
    result_schema: dict[str, Any] | None = None
    source_options: dict[str, Any] = field(default_factory=dict)
    schedule_name: str | None = None
    scheduled_for: datetime | None = None


@dataclass(frozen=True)
class SourceRow:
    """One image to read: its URI and, when known without reading it, a content fingerprint."""

    source: str
    fingerprint: str | None = None


@dataclass(frozen=True)
class ClaimedItem:
    """An item a worker holds under a lease, with what it needs to build the request."""

    item_id: int
    batch_id: int
    source: str
    fingerprint: str | None
    attempts: int
    lease_token: str


@dataclass(frozen=True)
class AttemptRecord:
    """One call to the provider, as it ended."""

    started_at: datetime
    ended_at: datetime
    outcome: AttemptOutcome
    http_status: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    request_id: str | None = None
    retry_after: float | None = None
    worker: str | None = None


@dataclass(frozen=True)
class ReapReport:
    expired_leases: int
    lost_messages: int


def _chunks(rows: Iterable[SourceRow], size: int) -> Iterator[list[SourceRow]]:
    iterator = iter(rows)
    while chunk := list(islice(iterator, size)):
        yield chunk


class Store:
    """The only class that issues SQL for the pipeline.

    Writes run on plain connections with Core statements: the ORM session's bookkeeping
    (synchronizing updated objects, flushing a unit of work) cost more CPU per item than
    the SQL itself, and no write here needs it.
    """

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.sessions = make_sessionmaker(engine)
        self._dialect = engine.dialect.name

    # -- batches -----------------------------------------------------------------------

    def create_batch(self, spec: BatchSpec, rows: Iterable[SourceRow]) -> tuple[int, int]:
        """Insert a batch and its items in one transaction; returns (batch id, item count).

        Rows are streamed in chunks; a source listed twice is kept once. An exception raised
        by the ``rows`` iterator (a bad source) rolls everything back: no half-made batch.
        """
        with self.sessions.begin() as session:
            batch = Batch(
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
                state=BatchState.RUNNING,
            )
            session.add(batch)
            session.flush()
            now = utcnow()
            for chunk in _chunks(rows, INSERT_CHUNK):
                values = [
                    {
                        "batch_id": batch.id,
                        "source": row.source,
                        "fingerprint": row.fingerprint,
                        "state": ItemState.QUEUED,
                        "attempts": 0,
                        "created_at": now,
                        "updated_at": now,
                    }
                    for row in chunk
                ]
                session.connection().execute(self._insert_ignoring_duplicates(), values)
            total = session.scalar(
                select(func.count()).select_from(Item).where(Item.batch_id == batch.id)
            )
            batch.total_items = int(total or 0)
            return batch.id, batch.total_items

    def _insert_ignoring_duplicates(self) -> Any:
        if self._dialect == "postgresql":
            return pg_insert(Item).on_conflict_do_nothing(index_elements=["batch_id", "source"])
        if self._dialect == "sqlite":
            return sqlite_insert(Item).on_conflict_do_nothing(index_elements=["batch_id", "source"])
        return insert(Item)

    def get_batch(self, batch_id: int) -> Batch | None:
        with self.sessions() as session:
            return session.get(Batch, batch_id)

    def stop_batch(self, batch_id: int, reason: str, code: str) -> int:
        """Stop a batch after an error that every further call would repeat.

        Its queued items are cancelled with ``code``; returns how many.
        """
        now = utcnow()
        with self.engine.begin() as session:
            session.execute(
                update(Batch)
                .where(Batch.id == batch_id, Batch.state == BatchState.RUNNING)
                .values(state=BatchState.STOPPED, stop_reason=reason, finished_at=now)
            )
            return self._cancel_queued(session, batch_id, now, code, reason)

    def cancel_batch(self, batch_id: int) -> int:
        """Cancel a running batch: its queued items stop at once; running ones finish."""
        now = utcnow()
        with self.engine.begin() as session:
            session.execute(
                update(Batch)
                .where(Batch.id == batch_id, Batch.state == BatchState.RUNNING)
                .values(state=BatchState.CANCELLED, finished_at=now)
            )
            return self._cancel_queued(session, batch_id, now, "cancelled", "batch cancelled")

    def _cancel_queued(
        self, session: Connection, batch_id: int, now: datetime, code: str, message: str
    ) -> int:
        result = session.execute(
            update(Item)
            .where(Item.batch_id == batch_id, Item.state == ItemState.QUEUED)
            .values(
                state=ItemState.CANCELLED,
                last_error_code=code,
                last_error_message=message,
                dispatched_at=None,
                finished_at=now,
                updated_at=now,
            )
        )
        cancelled = _changed(result)
        tallies.add(
            session,
            batch_id,
            0,
            {
                (TallyKind.STATE, ItemState.CANCELLED.value): cancelled,
                (TallyKind.ERROR, code): cancelled,
            },
        )
        return cancelled

    def complete_finished_batches(self) -> list[int]:
        """Mark running batches with no queued or running item left as completed."""
        # IN (queued, running), not NOT IN (terminal states): two index lookups per batch
        # on ix_items_batch_id_state instead of a scan of its finished items.
        open_items = (
            select(Item.id)
            .where(Item.batch_id == Batch.id, Item.state.in_(OPEN_ITEM_STATES))
            .limit(1)
        )
        now = utcnow()
        with self.engine.begin() as session:
            done = list(
                session.scalars(
                    select(Batch.id).where(Batch.state == BatchState.RUNNING, ~exists(open_items))
                )
            )
            if done:
                session.execute(
                    update(Batch)
                    .where(Batch.id.in_(done), Batch.state == BatchState.RUNNING)
                    .values(state=BatchState.COMPLETED, finished_at=now)
                )
            return done

    def batch_is_open(self, batch_id: int) -> bool:
        """True while the batch has a queued or running item."""
        with self.sessions() as session:
            query = select(
                exists().where(Item.batch_id == batch_id, Item.state.in_(OPEN_ITEM_STATES))
            )
            return bool(session.scalar(query))

    def counts_by_state(self, batch_id: int) -> dict[ItemState, int]:
        """Items by state, from the batch's tallies: a few rows, whatever the batch size."""
        with self.snapshot() as session:
            return tallies.item_counts(session, [batch_id])[batch_id]

    @contextmanager
    def snapshot(self) -> Iterator[Session]:
        """A read-only session whose queries all see one snapshot."""
        with self.sessions() as session:
            if self._dialect == "postgresql":
                session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
            yield session

    # -- dispatch ----------------------------------------------------------------------

    def pick_for_dispatch(
        self,
        limit: int,
        now: datetime | None = None,
        batch_id: int | None = None,
        retries_only: bool = False,
    ) -> list[int]:
        """Mark up to ``limit`` due, undispatched items as dispatched; returns their ids.

        Oldest first. ``retries_only``: items that ran before (a retry, or a dead worker's
        item), which carry a ``not_before``. ``FOR UPDATE SKIP LOCKED`` lets two dispatchers
        run at once on PostgreSQL without picking the same rows (SQLite serializes writers).
        """
        if limit <= 0:
            return []
        now = now or utcnow()
        query = (
            select(Item.id)
            .join(Batch, Batch.id == Item.batch_id)
            .where(
                Item.state == ItemState.QUEUED,
                Item.dispatched_at.is_(None),
                or_(Item.not_before.is_(None), Item.not_before <= now),
                Batch.state == BatchState.RUNNING,
            )
            .order_by(Item.id)
            .limit(limit)
        )
        if batch_id is not None:
            query = query.where(Item.batch_id == batch_id)
        if retries_only:
            query = query.where(Item.not_before.is_not(None))
        if self._dialect == "postgresql":
            query = query.with_for_update(skip_locked=True, of=Item)
        with self.engine.begin() as session:
            ids = list(session.scalars(query))
            if ids:
                session.execute(
                    update(Item)
                    .where(Item.id.in_(ids), Item.state == ItemState.QUEUED)
                    .values(dispatched_at=now)
                )
            return ids

    def unmark_dispatched(self, item_ids: Sequence[int]) -> None:
        """The publish failed: these items are not in the broker after all."""
        if not item_ids:
            return
        with self.engine.begin() as session:
            session.execute(
                update(Item)
                .where(Item.id.in_(item_ids), Item.state == ItemState.QUEUED)
                .values(dispatched_at=None)
            )

    def in_flight_count(self) -> int:
        """Items in the broker or running: what the dispatch window bounds."""
        with self.sessions() as session:
            in_broker = session.scalar(
                select(func.count())
                .select_from(Item)
                .where(Item.state == ItemState.QUEUED, Item.dispatched_at.is_not(None))
            )
            running = session.scalar(
                select(func.count()).select_from(Item).where(Item.state == ItemState.RUNNING)
            )
            return int(in_broker or 0) + int(running or 0)

    def next_due_at(self) -> datetime | None:
        """The earliest ``not_before`` among waiting retries, for a dispatcher's sleep."""
        with self.sessions() as session:
            return session.scalar(
                select(func.min(Item.not_before)).where(
                    Item.state == ItemState.QUEUED, Item.dispatched_at.is_(None)
                )
            )

    # -- recovery ----------------------------------------------------------------------

    def reap(self, now: datetime, lost_after: timedelta) -> ReapReport:
        """Return expired leases and long-unclaimed messages to the dispatcher.

        A running item whose lease expired belongs to a dead worker: it goes back to queued.
        A queued item dispatched longer than ``lost_after`` ago was probably lost by the
        broker: it is dispatched again (a duplicate message is harmless, the claim guards).
        """
        with self.engine.begin() as session:
            expired = session.execute(
                update(Item)
                .where(Item.state == ItemState.RUNNING, Item.lease_until < now)
                .values(
                    state=ItemState.QUEUED,
                    lease_token=None,
                    lease_until=None,
                    dispatched_at=None,
                    # Due now, and marked as run before: it goes to the retry queue.
                    not_before=now,
                    updated_at=now,
                )
            )
            lost = session.execute(
                update(Item)
                .where(
                    Item.state == ItemState.QUEUED,
                    Item.dispatched_at.is_not(None),
                    Item.dispatched_at < now - lost_after,
                )
                .values(dispatched_at=None)
            )
            return ReapReport(expired_leases=_changed(expired), lost_messages=_changed(lost))

    def reset_dispatched(self, batch_id: int | None = None) -> int:
        """The broker lost its queue (a restart without persistence): dispatch again."""
        statement = (
            update(Item)
            .where(Item.state == ItemState.QUEUED, Item.dispatched_at.is_not(None))
            .values(dispatched_at=None)
        )
        if batch_id is not None:
            statement = statement.where(Item.batch_id == batch_id)
        with self.engine.begin() as session:
            result = session.execute(statement)
            return _changed(result)

    # -- one item's life ---------------------------------------------------------------

    def claim(self, item_id: int, token: str, lease_until: datetime) -> ClaimedItem | None:
        """Take a queued, due item under a lease; None if it is not ours to run."""
        params = {"item_id": item_id, "token": token, "lease_until": lease_until, "now": utcnow()}
        with self.engine.begin() as session:
            row = session.execute(_CLAIM, params).first()
            if row is None:
                return None
            return ClaimedItem(
                item_id=row.id,
                batch_id=row.batch_id,
                source=row.source,
                fingerprint=row.fingerprint,
                attempts=row.attempts,
                lease_token=token,
            )

    def renew_leases(self, leases: dict[int, str], lease_until: datetime) -> int:
        """Extend the leases of items still held by these tokens; returns how many."""
        if not leases:
            return 0
        with self.engine.begin() as session:
            result = session.execute(
                update(Item)
                .where(
                    Item.id.in_(list(leases)),
                    Item.state == ItemState.RUNNING,
                    Item.lease_token.in_(list(leases.values())),
                )
                .values(lease_until=lease_until)
            )
            return _changed(result)

    def _insert_attempt(
        self, session: Connection, item: ClaimedItem, number: int, attempt: AttemptRecord
    ) -> None:
        session.execute(
            _INSERT_ATTEMPT,
            {
                "item_id": item.item_id,
                "number": number,
                "outcome": attempt.outcome,
                "started_at": attempt.started_at,
                "ended_at": attempt.ended_at,
                "http_status": attempt.http_status,
                "error_code": attempt.error_code,
                "error_message": attempt.error_message,
                "request_id": attempt.request_id,
                "retry_after": attempt.retry_after,
                "worker": attempt.worker,
            },
        )

    def _count_unguarded(
        self, session: Connection, item: ClaimedItem, attempt: AttemptRecord
    ) -> None:
        """Count a paid call on an item this worker no longer holds (its result is dropped)."""
        number = session.scalar(
            update(Item)
            .where(Item.id == item.item_id)
            .values(attempts=Item.attempts + 1)
            .returning(Item.attempts)
        )
        if number is not None:
            self._insert_attempt(session, item, int(number), attempt)

    def _held_update(
        self,
        session: Connection,
        item: ClaimedItem,
        attempt: AttemptRecord | None,
        target: ItemState | None = None,
        record_if_lost: bool = True,
        **values: Any,
    ) -> bool:
        """Update an item this worker holds, counting ``attempt`` in the same statement.

        ``target``: the state it moves to (its lease ends), or None to stay running. False
        when the lease had moved on: nothing changed.
        """
        statement = update(Item).where(
            Item.id == item.item_id,
            Item.state == ItemState.RUNNING,
            Item.lease_token == item.lease_token,
        )
        if target is not None:
            statement = statement.where(Item.state.in_(sources_of(target))).values(
                state=target, lease_token=None, lease_until=None
            )
        if attempt is not None:
            statement = statement.values(attempts=Item.attempts + 1)
        number = session.scalar(
            statement.values(updated_at=utcnow(), **values).returning(Item.attempts)
        )
        if number is None:
            if attempt is not None and record_if_lost:
                # The call was made and paid for: it stays on the record either way.
                self._count_unguarded(session, item, attempt)
            return False
        if attempt is not None:
            self._insert_attempt(session, item, int(number), attempt)
        return True

    def succeed(self, item: ClaimedItem, attempt: AttemptRecord, result: dict[str, Any]) -> bool:
        """Persist the result, the attempt and the terminal state in one transaction.

        Returns False (and keeps no result) when the lease had moved on to another worker;
        the paid call is still recorded, as a discarded attempt.
        """
        with self.engine.begin() as session:
            if not self._held_update(
                session,
                item,
                attempt,
                ItemState.SUCCEEDED,
                record_if_lost=False,
                finished_at=utcnow(),
                last_error_code=None,
                last_error_message=None,
            ):
                self._count_unguarded(session, item, _discarded(attempt))
                return False
            session.execute(_INSERT_RESULT, {"item_id": item.item_id, **result})
            model = str(result.get("model") or "")
            tallies.add(
                session,
                item.batch_id,
                item.item_id,
                {
                    (TallyKind.STATE, ItemState.SUCCEEDED.value): 1,
                    (TallyKind.FINISH, str(result.get("finish_reason") or "")): 1,
                    (TallyKind.INPUT_TOKENS, model): int(result.get("input_tokens") or 0),
                    (TallyKind.OUTPUT_TOKENS, model): int(result.get("output_tokens") or 0),
                    (TallyKind.IMAGE_TOKENS, model): int(result.get("image_tokens") or 0),
                    (TallyKind.TOTAL_TOKENS, model): int(result.get("total_tokens") or 0),
                },
            )
            return True

    def retry_later(self, item: ClaimedItem, attempt: AttemptRecord, not_before: datetime) -> bool:
        """Record a retryable failure; the item waits in SQL until ``not_before``."""
        with self.engine.begin() as session:
            return self._held_update(
                session,
                item,
                attempt,
                ItemState.QUEUED,
                not_before=not_before,
                dispatched_at=None,
                last_error_code=attempt.error_code,
                last_error_message=attempt.error_message,
            )

    def record_retry(self, item: ClaimedItem, attempt: AttemptRecord) -> bool:
        """Record a retryable failure that is retried at once, in the same claim."""
        with self.engine.begin() as session:
            return self._held_update(
                session,
                item,
                attempt,
                last_error_code=attempt.error_code,
                last_error_message=attempt.error_message,
            )

    def release(self, item: ClaimedItem, not_before: datetime) -> bool:
        """Give the item back without a call (the throttle had no slot soon enough)."""
        with self.engine.begin() as session:
            return self._held_update(
                session, item, None, ItemState.QUEUED, not_before=not_before, dispatched_at=None
            )

    def fail(
        self, item: ClaimedItem, code: str, message: str, attempt: AttemptRecord | None = None
    ) -> bool:
        """End the item as failed with ``code``; ``attempt`` when a call was made."""
        with self.engine.begin() as session:
            failed = self._held_update(
                session,
                item,
                attempt,
                ItemState.FAILED,
                finished_at=utcnow(),
                last_error_code=code,
                last_error_message=message,
            )
            if failed:
                tallies.add(
                    session,
                    item.batch_id,
                    item.item_id,
                    {(TallyKind.STATE, ItemState.FAILED.value): 1, (TallyKind.ERROR, code): 1},
                )
            return failed

    def requeue_failed(self, batch_id: int, codes: Sequence[str] | None = None) -> int:
        """Put failed and cancelled items of a batch back in the queue (``qocr retry``)."""
        now = utcnow()
        condition = and_(Item.batch_id == batch_id, Item.state.in_(REQUEUEABLE_STATES))
        if codes:
            condition = and_(condition, Item.last_error_code.in_(list(codes)))
        with self.engine.begin() as session:
            requeued = 0
            decrements: Counter[tuple[TallyKind, str]] = Counter()
            # One UPDATE per state left, so the codes it returns are what left the tallies.
            for state in REQUEUEABLE_STATES:
                codes_left = session.scalars(
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
            tallies.add(session, batch_id, 0, decrements)
            if requeued:
                session.execute(
                    update(Batch)
                    .where(Batch.id == batch_id)
                    .values(state=BatchState.RUNNING, finished_at=None, stop_reason=None)
                )
            return requeued


def _changed(result: Any) -> int:
    """Rows an UPDATE changed (drivers answer -1 when they cannot tell)."""
    return max(int(result.rowcount), 0)


def _discarded(attempt: AttemptRecord) -> AttemptRecord:
    return AttemptRecord(
        started_at=attempt.started_at,
        ended_at=attempt.ended_at,
        outcome=AttemptOutcome.DISCARDED,
        http_status=attempt.http_status,
        request_id=attempt.request_id,
        worker=attempt.worker,
        error_code="lease_lost",
        error_message="the item's lease had passed to another worker; result not kept",
    )
