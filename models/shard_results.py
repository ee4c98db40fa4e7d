"""A shard's lines, written into its items: one result per item, whatever the files hold.

Each line's verdict ends the item's in-flight attempt (counted when the shard's file left:
:meth:`ShardStore.count_calls`) and moves the item as a realtime call's end would
(:mod:`models.transitions`): succeeded with its result row and tallies, failed with its
code, or back to the queue with a retry time. A write only takes an item the shard still
holds (a ``shard_items`` row), and a verdict takes that row away: a second line for the
same ``custom_id`` finds nothing and is ignored, so no item ever gets a second result.
Closing a shard sends the items no line spoke for (expired, cancelled) back to the queue.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, delete, exists, select, update

from qocr.models.base import utcnow
from qocr.models.db import EngineBound
from qocr.models.entities import Attempt, Item
from qocr.models.records import AttemptRecord, ResultRecord
from qocr.models.shard_store import ShardLease
from qocr.models.shards import BatchShard, ShardItem, ShardState
from qocr.models.states import AttemptOutcome, ItemState
from qocr.models.tallies import TallyKind, add_tallies
from qocr.models.text_caps import CODE_MAX_CHARS, MESSAGE_MAX_CHARS, cap
from qocr.models.transitions import _INSERT_RESULT, _result_row

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class LineVerdict:
    """What one line (or one missing line) means for its item.

    ``attempt.outcome``: SUCCEEDED (with ``result``), RETRY (back to the queue at
    ``not_before``; failed instead when its attempts are spent), FAILED or STOPPED.
    """

    item_id: int
    attempt: AttemptRecord
    result: ResultRecord | None = None
    not_before: datetime | None = None


@dataclass
class Applied:
    """How many verdicts changed an item, and how many were ignored (duplicates, unknowns)."""

    succeeded: int = 0
    failed: int = 0
    requeued: int = 0
    discarded: int = 0
    ignored: int = 0


class ShardResults(EngineBound):
    """The writes of a shard's collection."""

    def apply(
        self, lease: ShardLease, verdicts: Sequence[LineVerdict], max_attempts: int
    ) -> Applied:
        """Write ``verdicts`` in one transaction (the caller sends lines in chunks)."""
        applied = Applied()
        with self.engine.begin() as conn:
            if not _holds(conn, lease):
                applied.ignored += len(verdicts)
                return applied
            for verdict in verdicts:
                _apply_one(conn, lease, verdict, max_attempts, applied)
        return applied

    def close(
        self, lease: ShardLease, code: str, message: str, not_before: datetime, max_attempts: int
    ) -> Applied:
        """End the shard: the items no line spoke for go back to the queue (or fail when
        their attempts are spent); a cancelled item's call is abandoned. The shard is done."""
        applied = Applied()
        now = utcnow()
        with self.engine.begin() as conn:
            if not _holds(conn, lease):
                return applied
            left = conn.execute(
                select(Item.id, Item.state)
                .join(ShardItem, ShardItem.item_id == Item.id)
                .where(ShardItem.shard_id == lease.id)
            ).all()
            for row in left:
                attempt = AttemptRecord(
                    started_at=now,
                    ended_at=now,
                    outcome=AttemptOutcome.RETRY,
                    error_code=code,
                    error_message=message,
                    worker=f"shard {lease.id}",
                )
                if ItemState(row.state) != ItemState.QUEUED:
                    _end_call(conn, row.id, _abandoned(attempt))
                    conn.execute(delete(ShardItem).where(ShardItem.item_id == row.id))
                    applied.discarded += 1
                    continue
                verdict = LineVerdict(row.id, attempt, not_before=not_before)
                _apply_one(conn, lease, verdict, max_attempts, applied)
            conn.execute(
                update(BatchShard)
                .where(BatchShard.id == lease.id)
                .values(
                    state=ShardState.DONE,
                    finished_at=now,
                    updated_at=now,
                    lease_token=None,
                    lease_until=None,
                )
            )
        return applied


def _holds(conn: Connection, lease: ShardLease) -> bool:
    """Lock the shard's row for this transaction if the lease is still ours."""
    return bool(
        conn.execute(
            update(BatchShard)
            .where(BatchShard.id == lease.id, BatchShard.lease_token == lease.token)
            .values(updated_at=utcnow())
        ).rowcount
    )


def _apply_one(
    conn: Connection, lease: ShardLease, verdict: LineVerdict, max_attempts: int, applied: Applied
) -> None:
    held = exists().where(ShardItem.item_id == verdict.item_id, ShardItem.shard_id == lease.id)
    if not conn.scalar(select(held)):
        log.warning(
            "shard %s: a line for item %s, which the shard does not hold (a duplicate or "
            "unknown custom_id): ignored",
            lease.id,
            verdict.item_id,
        )
        applied.ignored += 1
        return
    conn.execute(delete(ShardItem).where(ShardItem.item_id == verdict.item_id))
    if verdict.attempt.outcome == AttemptOutcome.RETRY:
        attempts = conn.scalar(select(Item.attempts).where(Item.id == verdict.item_id))
        if attempts is not None and attempts >= max_attempts:
            # A retry with no attempt left: a final failure.
            verdict = LineVerdict(verdict.item_id, _final(verdict.attempt, max_attempts))
    outcome = verdict.attempt.outcome
    target = {
        AttemptOutcome.SUCCEEDED: ItemState.SUCCEEDED,
        AttemptOutcome.RETRY: ItemState.QUEUED,
    }.get(outcome, ItemState.FAILED)
    now = utcnow()
    values: dict[str, object] = {"updated_at": now}
    if target == ItemState.QUEUED:
        values.update(not_before=verdict.not_before or now)
    else:
        values.update(state=target, finished_at=now)
    if target == ItemState.SUCCEEDED:
        values.update(last_error_code=None, last_error_message=None)
    else:
        values.update(
            last_error_code=cap(verdict.attempt.error_code, CODE_MAX_CHARS),
            last_error_message=cap(verdict.attempt.error_message, MESSAGE_MAX_CHARS),
        )
    moved = conn.execute(
        update(Item)
        .where(Item.id == verdict.item_id, Item.state == ItemState.QUEUED)
        .values(**values)
        .returning(Item.batch_id)
    ).first()
    if moved is None:
        # Not queued any more (cancelled meanwhile): the call is on the record, its answer
        # is not kept.
        _end_call(conn, verdict.item_id, verdict.attempt.discarded())
        applied.discarded += 1
        return
    _end_call(conn, verdict.item_id, verdict.attempt)
    batch_id = int(moved.batch_id)
    if target == ItemState.SUCCEEDED:
        assert verdict.result is not None
        _insert_result(conn, batch_id, verdict.item_id, verdict.result)
        applied.succeeded += 1
    elif target == ItemState.FAILED:
        code = cap(verdict.attempt.error_code, CODE_MAX_CHARS) or ""
        add_tallies(
            conn,
            batch_id,
            verdict.item_id,
            {(TallyKind.STATE, ItemState.FAILED.value): 1, (TallyKind.ERROR, code): 1},
        )
        applied.failed += 1
    else:
        applied.requeued += 1


def _final(attempt: AttemptRecord, max_attempts: int) -> AttemptRecord:
    """A retryable failure whose item has no attempt left: a final one."""
    message = f"{attempt.error_message or ''} (QOCR_MAX_ATTEMPTS={max_attempts} reached)".strip()
    return AttemptRecord(
        started_at=attempt.started_at,
        ended_at=attempt.ended_at,
        outcome=AttemptOutcome.FAILED,
        http_status=attempt.http_status,
        error_code=attempt.error_code,
        error_message=message,
        request_id=attempt.request_id,
        retry_after=attempt.retry_after,
        worker=attempt.worker,
    )


def _abandoned(attempt: AttemptRecord) -> AttemptRecord:
    return AttemptRecord(
        started_at=attempt.started_at,
        ended_at=attempt.ended_at,
        outcome=AttemptOutcome.ABANDONED,
        error_code=attempt.error_code,
        error_message=attempt.error_message,
        worker=attempt.worker,
    )


def _end_call(conn: Connection, item_id: int, attempt: AttemptRecord) -> None:
    """Fill in the item's in-flight attempt row (written when the shard's calls were counted)."""
    conn.execute(
        update(Attempt)
        .where(Attempt.item_id == item_id, Attempt.outcome == AttemptOutcome.IN_FLIGHT)
        .values(
            outcome=attempt.outcome,
            ended_at=attempt.ended_at,
            http_status=attempt.http_status,
            error_code=cap(attempt.error_code, CODE_MAX_CHARS),
            error_message=cap(attempt.error_message, MESSAGE_MAX_CHARS),
            request_id=cap(attempt.request_id, CODE_MAX_CHARS),
            retry_after=attempt.retry_after,
        )
    )


def _insert_result(conn: Connection, batch_id: int, item_id: int, result: ResultRecord) -> None:
    """The result row and the batch's tallies, as :meth:`ItemTransitions.succeed` writes them."""
    row = _result_row(result)
    conn.execute(_INSERT_RESULT, {"item_id": item_id, **row})
    model = row["model"] or ""
    add_tallies(
        conn,
        batch_id,
        item_id,
        {
            (TallyKind.STATE, ItemState.SUCCEEDED.value): 1,
            (TallyKind.FINISH, row["finish_reason"] or ""): 1,
            (TallyKind.INPUT_TOKENS, model): result.input_tokens,
            (TallyKind.OUTPUT_TOKENS, model): result.output_tokens,
            (TallyKind.IMAGE_TOKENS, model): result.image_tokens,
            (TallyKind.TOTAL_TOKENS, model): result.total_tokens,
        },
    )
