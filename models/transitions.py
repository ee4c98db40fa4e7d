"""One item's life under a worker: claim, lease renewal, and every way a claim ends.

Each transition is one conditional UPDATE whose WHERE clause names the states the item may
leave (:data:`models.states.ITEM_TRANSITIONS`) and the lease token of the worker that
holds it. A worker whose lease moved on can therefore never overwrite what another worker
did: its update changes no row, and it learns so from the row count. A call that was made
is recorded as an attempt either way.
"""

from __future__ import annotations

from dataclasses import fields
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, bindparam, insert, or_, update

from qocr.models.base import utcnow
from qocr.models.db import EngineBound, rows_changed
from qocr.models.entities import Attempt, Item, Result
from qocr.models.records import AttemptRecord, ClaimedItem, ResultRecord
from qocr.models.result_cache import reuse_tallies
from qocr.models.states import AttemptOutcome, ItemState, sources_of
from qocr.models.tallies import TallyKind, add_tallies
from qocr.models.text_caps import CODE_MAX_CHARS, MESSAGE_MAX_CHARS, cap

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
_HOLD_RECEIVED = (
    update(Item)
    .where(
        Item.id.in_(bindparam("ids", expanding=True)),
        Item.state == ItemState.QUEUED,
        Item.dispatched_at.is_not(None),
    )
    .values(lease_until=bindparam("lease_until"))
    .returning(Item.id)
)
_COUNT_CALL = (
    update(Item)
    .where(
        Item.id == bindparam("item_id"),
        Item.state == ItemState.RUNNING,
        Item.lease_token == bindparam("token"),
        Item.attempts < bindparam("max_attempts"),
    )
    .values(attempts=Item.attempts + 1, updated_at=bindparam("now"))
    .returning(Item.attempts)
)
_INSERT_ATTEMPT = insert(Attempt)
# An in-flight attempt's row, filled in when its call ends (values given as parameters).
_FILL_ATTEMPT = update(Attempt).where(
    Attempt.item_id == bindparam("of_item"), Attempt.number == bindparam("of_number")
)
_INSERT_RESULT = insert(Result)
_RESULT_FIELDS = tuple(field.name for field in fields(ResultRecord))


class ItemTransitions(EngineBound):
    """The queries of a worker that holds, or tries to hold, one item."""

    def claim(self, item_id: int, token: str, lease_until: datetime) -> ClaimedItem | None:
        """Take a queued, due item under a lease; None if it is not ours to run."""
        params = {"item_id": item_id, "token": token, "lease_until": lease_until, "now": utcnow()}
        with self.engine.begin() as conn:
            row = conn.execute(_CLAIM, params).first()
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

    def hold_received(self, item_ids: list[int], lease_until: datetime) -> list[int]:
        """Lease items whose messages this worker received but has not started yet.

        A worker killed with messages in hand leaves them to the broker's visibility timeout
        (minutes); leased here, they are back in the queue when the lease runs out instead.
        Returns the ids still waiting (the others have been claimed or have moved on).
        """
        if not item_ids:
            return []
        with self.engine.begin() as conn:
            return list(conn.scalars(_HOLD_RECEIVED, {"ids": item_ids, "lease_until": lease_until}))

    def begin_call(
        self, item: ClaimedItem, started_at: datetime, worker: str | None, max_attempts: int
    ) -> int | None:
        """Count a call before it leaves: the item's attempt and an in-flight attempt row.

        One transaction, committed before the request is sent, so whatever happens after
        (a crash, a time limit, a database that cannot take the result) the call is on the
        record and counts toward ``max_attempts``. Returns the attempt's number, or None
        when no call may be made: the lease moved on, or the attempts are spent.
        """
        params = {
            "item_id": item.item_id,
            "token": item.lease_token,
            "max_attempts": max_attempts,
            "now": utcnow(),
        }
        with self.engine.begin() as conn:
            number = conn.scalar(_COUNT_CALL, params)
            if number is None:
                return None
            conn.execute(
                _INSERT_ATTEMPT,
                {
                    "item_id": item.item_id,
                    "number": int(number),
                    "outcome": AttemptOutcome.IN_FLIGHT,
                    "started_at": started_at,
                    "ended_at": None,
                    "called": True,
                    "worker": cap(worker, CODE_MAX_CHARS),
                },
            )
            return int(number)

    def renew_leases(self, leases: dict[int, str], lease_until: datetime) -> int:
        """Extend the leases of items still held by these tokens; returns how many."""
        if not leases:
            return 0
        with self.engine.begin() as conn:
            result = conn.execute(
                update(Item)
                .where(
                    Item.id.in_(list(leases)),
                    Item.state == ItemState.RUNNING,
                    Item.lease_token.in_(list(leases.values())),
                )
                .values(lease_until=lease_until)
            )
            return rows_changed(result)

    def succeed(self, item: ClaimedItem, attempt: AttemptRecord, result: ResultRecord) -> bool:
        """Persist the result, the attempt and the terminal state in one transaction.

        Returns False (and keeps no result) when the lease had moved on to another worker;
        the paid call is still recorded, as a discarded attempt.
        """
        row = _result_row(result)
        with self.engine.begin() as conn:
            if not _held_update(
                conn,
                item,
                attempt,
                ItemState.SUCCEEDED,
                record_if_lost=False,
                finished_at=utcnow(),
                last_error_code=None,
                last_error_message=None,
            ):
                _count_unguarded(conn, item, attempt.discarded())
                return False
            self._insert_result(conn, item, row, result)
            return True

    def save_kept_result(
        self, item: ClaimedItem, attempt: AttemptRecord, result: ResultRecord
    ) -> bool:
        """Save a paid result whose first save failed (the database was away).

        Taken even if the lease passed on meanwhile, as long as the item has not finished:
        a result the provider was paid for is never thrown away to pay for it again. Another
        worker that claimed the item since then loses its lease, so its result is not kept.
        False when the item had finished already (the call stays on the record, discarded).
        """
        row = _result_row(result)
        now = utcnow()
        with self.engine.begin() as conn:
            moved = conn.scalar(
                update(Item)
                .where(Item.id == item.item_id, Item.state.in_(sources_of(ItemState.SUCCEEDED)))
                .values(
                    state=ItemState.SUCCEEDED,
                    lease_token=None,
                    lease_until=None,
                    dispatched_at=None,
                    finished_at=now,
                    updated_at=now,
                    last_error_code=None,
                    last_error_message=None,
                    **({} if attempt.number is not None else {"attempts": Item.attempts + 1}),
                )
                .returning(Item.attempts)
            )
            if moved is None:
                _count_unguarded(conn, item, attempt.discarded())
                return False
            _record_attempt(conn, item, attempt, int(moved))
            self._insert_result(conn, item, row, result)
            return True

    def _insert_result(
        self, conn: Connection, item: ClaimedItem, row: dict[str, Any], result: ResultRecord
    ) -> None:
        conn.execute(_INSERT_RESULT, {"item_id": item.item_id, **row})
        model = row["model"] or ""
        add_tallies(
            conn,
            item.batch_id,
            item.item_id,
            {
                (TallyKind.STATE, ItemState.SUCCEEDED.value): 1,
                (TallyKind.FINISH, row["finish_reason"] or ""): 1,
                (TallyKind.INPUT_TOKENS, model): result.input_tokens,
                (TallyKind.OUTPUT_TOKENS, model): result.output_tokens,
                (TallyKind.IMAGE_TOKENS, model): result.image_tokens,
                (TallyKind.TOTAL_TOKENS, model): result.total_tokens,
                **reuse_tallies(result),
            },
        )

    def retry_later(self, item: ClaimedItem, attempt: AttemptRecord, not_before: datetime) -> bool:
        """Record a retryable failure; the item waits in SQL until ``not_before``."""
        with self.engine.begin() as conn:
            return _held_update(
                conn,
                item,
                attempt,
                ItemState.QUEUED,
                not_before=not_before,
                dispatched_at=None,
                **_last_error(attempt.error_code, attempt.error_message),
            )

    def record_retry(self, item: ClaimedItem, attempt: AttemptRecord) -> bool:
        """Record a retryable failure that is retried at once, in the same claim."""
        with self.engine.begin() as conn:
            return _held_update(
                conn, item, attempt, **_last_error(attempt.error_code, attempt.error_message)
            )

    def release(self, item: ClaimedItem, not_before: datetime) -> bool:
        """Give the item back without a call (the throttle had no slot soon enough)."""
        with self.engine.begin() as conn:
            return _held_update(
                conn, item, None, ItemState.QUEUED, not_before=not_before, dispatched_at=None
            )

    def fail(
        self, item: ClaimedItem, code: str, message: str, attempt: AttemptRecord | None = None
    ) -> bool:
        """End the item as failed with ``code``; ``attempt`` when a call was made."""
        last_error = _last_error(code, message)
        with self.engine.begin() as conn:
            failed = _held_update(
                conn, item, attempt, ItemState.FAILED, finished_at=utcnow(), **last_error
            )
            if failed:
                add_tallies(
                    conn,
                    item.batch_id,
                    item.item_id,
                    {
                        (TallyKind.STATE, ItemState.FAILED.value): 1,
                        (TallyKind.ERROR, last_error["last_error_code"]): 1,
                    },
                )
            return failed


def _held_update(
    conn: Connection,
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
    if attempt is not None and attempt.number is None:
        statement = statement.values(attempts=Item.attempts + 1)
    number = conn.scalar(statement.values(updated_at=utcnow(), **values).returning(Item.attempts))
    if number is None:
        if attempt is not None and record_if_lost:
            # The call was made and paid for: it stays on the record either way.
            _count_unguarded(conn, item, attempt)
        return False
    if attempt is not None:
        _record_attempt(conn, item, attempt, int(number))
    return True


def _count_unguarded(conn: Connection, item: ClaimedItem, attempt: AttemptRecord) -> None:
    """Record a try on an item this worker no longer holds (its result is dropped)."""
    if attempt.number is not None:  # counted when the call left
        _record_attempt(conn, item, attempt, attempt.number)
        return
    number = conn.scalar(
        update(Item)
        .where(Item.id == item.item_id)
        .values(attempts=Item.attempts + 1)
        .returning(Item.attempts)
    )
    if number is not None:
        _record_attempt(conn, item, attempt, int(number))


def _record_attempt(
    conn: Connection, item: ClaimedItem, attempt: AttemptRecord, counted_as: int
) -> None:
    """Fill in the attempt's in-flight row, or insert it as number ``counted_as``."""
    values = {
        "outcome": attempt.outcome,
        "started_at": attempt.started_at,
        "ended_at": attempt.ended_at,
        "http_status": attempt.http_status,
        "error_code": cap(attempt.error_code, CODE_MAX_CHARS),
        "error_message": cap(attempt.error_message, MESSAGE_MAX_CHARS),
        "request_id": cap(attempt.request_id, CODE_MAX_CHARS),
        "retry_after": attempt.retry_after,
        "worker": cap(attempt.worker, CODE_MAX_CHARS),
    }
    if attempt.number is None:
        row = {"item_id": item.item_id, "number": counted_as, "called": attempt.called}
        conn.execute(_INSERT_ATTEMPT, {**row, **values})
        return
    conn.execute(_FILL_ATTEMPT, {"of_item": item.item_id, "of_number": attempt.number, **values})


def _last_error(code: str | None, message: str | None) -> dict[str, Any]:
    """An item's last error, capped: the same code goes to the item and its tally."""
    return {
        "last_error_code": cap(code, CODE_MAX_CHARS),
        "last_error_message": cap(message, MESSAGE_MAX_CHARS),
    }


def _result_row(result: ResultRecord) -> dict[str, Any]:
    """The result's columns, the provider's short strings capped."""
    # Shallow on purpose: asdict() would deep-copy every word box of the result.
    row = {name: getattr(result, name) for name in _RESULT_FIELDS}
    for name in ("finish_reason", "request_id", "model"):
        row[name] = cap(row[name], CODE_MAX_CHARS)
    return row
