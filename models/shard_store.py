"""The queries of batch mode's shards: plan, lease, count, and record what the provider says.

Every write a worker makes on a shard names its lease token, as an item's transitions do
(:mod:`models.transitions`): a worker whose lease passed to another changes nothing. The
results of a shard's lines are written by :mod:`models.shard_results`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Select, delete, exists, insert, literal, or_, select, update

from qocr.models.base import utcnow
from qocr.models.db import EngineBound
from qocr.models.entities import Attempt, Batch, Item
from qocr.models.shards import (
    OPEN_SHARD_STATES,
    WORKER_SHARD_STATES,
    BatchShard,
    ShardItem,
    ShardState,
)
from qocr.models.states import AttemptOutcome, BatchState, ItemState
from qocr.models.tallies import TallyKind, add_tallies
from qocr.models.text_caps import CODE_MAX_CHARS, MESSAGE_MAX_CHARS, cap

BATCH_MODE = "batch"
# Ids per IN (...) list and rows per multi-row INSERT: SQLite allows 32,766 parameters.
ID_CHUNK = 500
INSERT_CHUNK = 1000
# An item whose attempts were spent before its shard could count another call.
SPENT_CODE = "attempts_spent"
SPENT_MESSAGE = "its {max_attempts} attempts (QOCR_MAX_ATTEMPTS) were spent in earlier shards"

_T = TypeVar("_T")


def chunks(values: Sequence[_T], size: int) -> Iterator[list[_T]]:
    for start in range(0, len(values), size):
        yield list(values[start : start + size])


@dataclass(frozen=True)
class ShardLease:
    """A shard as the worker holding its lease sees it."""

    id: int
    batch_id: int
    state: ShardState
    token: str
    lines: int | None
    file_id: str | None
    provider_batch_id: str | None
    provider_status: str | None
    output_file_id: str | None
    error_file_id: str | None
    error_message: str | None

    @property
    def counted(self) -> bool:
        """The shard's calls were counted: its item set is final."""
        return self.lines is not None


@dataclass(frozen=True)
class ShardItemRow:
    item_id: int
    source: str
    state: ItemState
    fingerprint: str | None  # what a document's downloaded copy is kept under


@dataclass(frozen=True)
class ProviderState:
    """What one poll of the provider said about a shard's batch."""

    status: str
    terminal: bool
    total: int
    completed: int
    failed: int
    output_file_id: str | None
    error_file_id: str | None
    error_message: str | None = None


@dataclass(frozen=True)
class ShardInfo:
    """A shard as ``qocr status`` shows it."""

    id: int
    state: ShardState
    provider_status: str | None
    provider_batch_id: str | None
    lines: int | None
    total: int
    completed: int
    failed: int
    error_message: str | None
    created_at: datetime
    submitted_at: datetime | None
    finished_at: datetime | None


def _free_items(batch_id: Any, now: datetime) -> Select[int]:
    """The batch's due queued items that no shard holds, oldest first."""
    held = exists().where(ShardItem.item_id == Item.id)
    return (
        select(Item.id)
        .where(
            Item.batch_id == batch_id,
            Item.state == ItemState.QUEUED,
            Item.dispatched_at.is_(None),
            or_(Item.not_before.is_(None), Item.not_before <= now),
            ~held,
        )
        .order_by(Item.id)
    )


class ShardStore(EngineBound):
    """Plans shards, leases them to workers, and keeps the provider's view of them."""

    # -- planning (the dispatcher) ----------------------------------------------------

    def batches_with_free_items(self, now: datetime | None = None) -> list[int]:
        """Running batch-mode batches with due queued items that no shard holds."""
        now = now or utcnow()
        free = exists(_free_items(Batch.id, now).limit(1))
        query = select(Batch.id).where(
            Batch.state == BatchState.RUNNING, Batch.mode == BATCH_MODE, free
        )
        with self.engine.connect() as conn:
            return list(conn.scalars(query.order_by(Batch.id)))

    def open_shard(self, batch_id: int, max_lines: int, now: datetime | None = None) -> int | None:
        """A new pending shard holding up to ``max_lines`` free items; None if none is free."""
        now = now or utcnow()
        with self.engine.begin() as conn:
            shard_id = conn.execute(
                insert(BatchShard)
                .values(batch_id=batch_id, state=ShardState.PENDING, created_at=now, updated_at=now)
                .returning(BatchShard.id)
            ).scalar_one()
            picked = _free_items(batch_id, now).limit(max_lines).subquery()
            # Counted from RETURNING: an INSERT … SELECT's rowcount is not reliable on psycopg.
            taken = len(
                conn.execute(
                    insert(ShardItem)
                    .from_select(["item_id", "shard_id"], select(picked.c.id, literal(shard_id)))
                    .returning(ShardItem.item_id)
                ).all()
            )
            if not taken:
                conn.execute(delete(BatchShard).where(BatchShard.id == shard_id))
                return None
            return int(shard_id)

    def due_for_worker(self, now: datetime, republish_after: timedelta) -> list[int]:
        """Shards a worker must take up (new, ended at the provider, or left by a dead worker)
        whose task was not sent within ``republish_after``; marks them sent now."""
        with self.engine.begin() as conn:
            return list(
                conn.scalars(
                    update(BatchShard)
                    .where(
                        BatchShard.state.in_(WORKER_SHARD_STATES),
                        or_(BatchShard.lease_until.is_(None), BatchShard.lease_until < now),
                        or_(
                            BatchShard.published_at.is_(None),
                            BatchShard.published_at < now - republish_after,
                        ),
                    )
                    .values(published_at=now)
                    .returning(BatchShard.id)
                )
            )

    def unmark_published(self, shard_ids: Sequence[int]) -> None:
        """The task could not be sent: the next tick sends it."""
        if not shard_ids:
            return
        with self.engine.begin() as conn:
            conn.execute(
                update(BatchShard).where(BatchShard.id.in_(shard_ids)).values(published_at=None)
            )

    def due_for_poll(self, now: datetime, interval: timedelta) -> list[tuple[int, str]]:
        """(shard id, provider batch id) of submitted shards not polled within ``interval``."""
        query = select(BatchShard.id, BatchShard.provider_batch_id).where(
            BatchShard.state == ShardState.SUBMITTED,
            BatchShard.provider_batch_id.is_not(None),
            or_(BatchShard.polled_at.is_(None), BatchShard.polled_at < now - interval),
        )
        with self.engine.connect() as conn:
            return [(int(row.id), str(row.provider_batch_id)) for row in conn.execute(query)]

    def due_for_cancel(self) -> list[tuple[int, str]]:
        """(shard id, provider batch id) of submitted shards whose batch no longer runs."""
        query = (
            select(BatchShard.id, BatchShard.provider_batch_id)
            .join(Batch, Batch.id == BatchShard.batch_id)
            .where(
                BatchShard.state == ShardState.SUBMITTED,
                BatchShard.provider_batch_id.is_not(None),
                BatchShard.cancel_requested.is_(False),
                Batch.state != BatchState.RUNNING,
            )
        )
        with self.engine.connect() as conn:
            return [(int(row.id), str(row.provider_batch_id)) for row in conn.execute(query)]

    def mark_cancel_requested(self, shard_id: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(BatchShard).where(BatchShard.id == shard_id).values(cancel_requested=True)
            )

    def record_poll(self, shard_id: int, state: ProviderState, now: datetime | None = None) -> bool:
        """Keep what the provider said; an ended batch goes to a worker to collect.

        Returns True when the shard moved to ``collecting``.
        """
        now = now or utcnow()
        values: dict[str, object] = {
            "provider_status": state.status,
            "request_total": state.total,
            "request_completed": state.completed,
            "request_failed": state.failed,
            "output_file_id": state.output_file_id,
            "error_file_id": state.error_file_id,
            "polled_at": now,
            "updated_at": now,
        }
        if state.error_message:
            values["error_message"] = cap(state.error_message, MESSAGE_MAX_CHARS)
        if state.terminal:
            values.update(state=ShardState.COLLECTING, published_at=None)
        with self.engine.begin() as conn:
            moved = conn.execute(
                update(BatchShard)
                .where(BatchShard.id == shard_id, BatchShard.state == ShardState.SUBMITTED)
                .values(**values)
            ).rowcount
        return bool(moved) and state.terminal

    # -- a worker's lease ---------------------------------------------------------------

    def lease(self, shard_id: int, token: str, until: datetime) -> ShardLease | None:
        """Take a shard a worker has work on; None when another worker holds it, or none left."""
        now = utcnow()
        with self.engine.begin() as conn:
            row = conn.execute(
                update(BatchShard)
                .where(
                    BatchShard.id == shard_id,
                    BatchShard.state.in_(WORKER_SHARD_STATES),
                    or_(BatchShard.lease_until.is_(None), BatchShard.lease_until < now),
                )
                .values(lease_token=token, lease_until=until, updated_at=now)
                .returning(BatchShard)
            ).first()
        if row is None:
            return None
        return ShardLease(
            id=row.id,
            batch_id=row.batch_id,
            state=ShardState(row.state),
            token=token,
            lines=row.lines,
            file_id=row.file_id,
            provider_batch_id=row.provider_batch_id,
            provider_status=row.provider_status,
            output_file_id=row.output_file_id,
            error_file_id=row.error_file_id,
            error_message=row.error_message,
        )

    def renew(self, shard_id: int, token: str, until: datetime) -> bool:
        with self.engine.begin() as conn:
            return bool(
                conn.execute(
                    update(BatchShard)
                    .where(BatchShard.id == shard_id, BatchShard.lease_token == token)
                    .values(lease_until=until)
                ).rowcount
            )

    def items(self, shard_id: int) -> list[ShardItemRow]:
        """The items the shard holds, in id order (its lines' order)."""
        query = (
            select(Item.id, Item.source, Item.state, Item.fingerprint)
            .join(ShardItem, ShardItem.item_id == Item.id)
            .where(ShardItem.shard_id == shard_id)
            .order_by(Item.id)
        )
        with self.engine.connect() as conn:
            return [
                ShardItemRow(row.id, row.source, ItemState(row.state), row.fingerprint)
                for row in conn.execute(query)
            ]

    def release(self, shard_id: int, item_ids: Sequence[int], not_before: datetime | None) -> None:
        """Let go of items that did not fit (or could not be read yet): a later shard takes them."""
        if not item_ids:
            return
        with self.engine.begin() as conn:
            for chunk in chunks(item_ids, ID_CHUNK):
                conn.execute(
                    delete(ShardItem).where(
                        ShardItem.shard_id == shard_id, ShardItem.item_id.in_(chunk)
                    )
                )
                if not_before is not None:
                    conn.execute(
                        update(Item)
                        .where(Item.id.in_(chunk), Item.state == ItemState.QUEUED)
                        .values(not_before=not_before)
                    )

    def count_calls(
        self, lease: ShardLease, size_bytes: int, worker: str, max_attempts: int
    ) -> list[int]:
        """Count the shard's calls before its file leaves, in one transaction.

        Each item the shard holds that is still queued with attempts left gets its attempt
        and an in-flight attempt row (as :meth:`ItemTransitions.begin_call` writes for a
        realtime call); one whose attempts are spent fails; the rest (cancelled meanwhile)
        leave the shard. The item set is final from here on (``lines`` is set). Returns the
        ids counted, nothing when the lease has moved on or the calls were counted before.
        """
        now = utcnow()
        held = select(ShardItem.item_id).where(ShardItem.shard_id == lease.id)
        with self.engine.begin() as conn:
            locked = conn.execute(
                update(BatchShard)
                .where(
                    BatchShard.id == lease.id,
                    BatchShard.lease_token == lease.token,
                    BatchShard.lines.is_(None),
                )
                .values(updated_at=now)
            ).rowcount
            if not locked:
                return []
            # Spent first: an item counted below must not look spent after its count.
            spent = conn.execute(
                update(Item)
                .where(Item.id.in_(held), Item.state == ItemState.QUEUED)
                .where(Item.attempts >= max_attempts)
                .values(
                    state=ItemState.FAILED,
                    finished_at=now,
                    updated_at=now,
                    last_error_code=SPENT_CODE,
                    last_error_message=SPENT_MESSAGE.format(max_attempts=max_attempts),
                )
            ).rowcount
            rows = conn.execute(
                update(Item)
                .where(
                    Item.id.in_(held),
                    Item.state == ItemState.QUEUED,
                    Item.attempts < max_attempts,
                )
                .values(attempts=Item.attempts + 1, updated_at=now)
                .returning(Item.id, Item.attempts)
            ).all()
            tag = cap(f"{worker} shard {lease.id}", CODE_MAX_CHARS)
            for chunk in chunks(rows, INSERT_CHUNK):
                conn.execute(
                    insert(Attempt),
                    [
                        {
                            "item_id": row.id,
                            "number": row.attempts,
                            "outcome": AttemptOutcome.IN_FLIGHT,
                            "started_at": now,
                            "ended_at": None,
                            "called": True,
                            "worker": tag,
                        }
                        for row in chunk
                    ],
                )
            add_tallies(
                conn,
                lease.batch_id,
                lease.id,
                {
                    (TallyKind.STATE, ItemState.FAILED.value): spent,
                    (TallyKind.ERROR, SPENT_CODE): spent,
                },
            )
            not_queued = select(Item.id).where(Item.id.in_(held), Item.state != ItemState.QUEUED)
            conn.execute(
                delete(ShardItem).where(
                    ShardItem.shard_id == lease.id, ShardItem.item_id.in_(not_queued)
                )
            )
            conn.execute(
                update(BatchShard)
                .where(BatchShard.id == lease.id)
                .values(lines=len(rows), bytes=size_bytes)
            )
        return sorted(int(row.id) for row in rows)

    def fail_uncounted(self, lease: ShardLease, failures: Sequence[tuple[int, str, str]]) -> int:
        """Fail items whose line could not be made (no call was counted for them):
        (item id, code, message) each, as a realtime item that fails before its call."""
        now = utcnow()
        failed = 0
        with self.engine.begin() as conn:
            for item_id, code, message in failures:
                moved = conn.execute(
                    update(Item)
                    .where(Item.id == item_id, Item.state == ItemState.QUEUED)
                    .values(
                        state=ItemState.FAILED,
                        finished_at=now,
                        updated_at=now,
                        last_error_code=cap(code, CODE_MAX_CHARS),
                        last_error_message=cap(message, MESSAGE_MAX_CHARS),
                    )
                ).rowcount
                conn.execute(delete(ShardItem).where(ShardItem.item_id == item_id))
                if moved:
                    failed += 1
                    add_tallies(
                        conn,
                        lease.batch_id,
                        item_id,
                        {
                            (TallyKind.STATE, ItemState.FAILED.value): 1,
                            (TallyKind.ERROR, cap(code, CODE_MAX_CHARS) or ""): 1,
                        },
                    )
        return failed

    def record_file(self, lease: ShardLease, file_id: str) -> bool:
        """The uploaded file's id, kept before the provider batch is made from it."""
        with self.engine.begin() as conn:
            return bool(
                conn.execute(
                    update(BatchShard)
                    .where(BatchShard.id == lease.id, BatchShard.lease_token == lease.token)
                    .values(file_id=cap(file_id, CODE_MAX_CHARS), updated_at=utcnow())
                ).rowcount
            )

    def record_submitted(self, lease: ShardLease, provider_batch_id: str, status: str) -> bool:
        """The provider batch exists: the dispatcher polls it from now on; the lease ends."""
        now = utcnow()
        with self.engine.begin() as conn:
            return bool(
                conn.execute(
                    update(BatchShard)
                    .where(
                        BatchShard.id == lease.id,
                        BatchShard.lease_token == lease.token,
                        BatchShard.state == ShardState.PENDING,
                    )
                    .values(
                        state=ShardState.SUBMITTED,
                        provider_batch_id=cap(provider_batch_id, CODE_MAX_CHARS),
                        provider_status=status,
                        request_total=BatchShard.lines,
                        submitted_at=now,
                        polled_at=now,
                        updated_at=now,
                        lease_token=None,
                        lease_until=None,
                    )
                ).rowcount
            )

    # -- reading ------------------------------------------------------------------------

    def shards_of(self, batch_id: int) -> list[ShardInfo]:
        query = select(BatchShard).where(BatchShard.batch_id == batch_id).order_by(BatchShard.id)
        with self.sessions() as session:
            return [
                ShardInfo(
                    id=shard.id,
                    state=ShardState(shard.state),
                    provider_status=shard.provider_status,
                    provider_batch_id=shard.provider_batch_id,
                    lines=shard.lines,
                    total=shard.request_total,
                    completed=shard.request_completed,
                    failed=shard.request_failed,
                    error_message=shard.error_message,
                    created_at=shard.created_at,
                    submitted_at=shard.submitted_at,
                    finished_at=shard.finished_at,
                )
                for shard in session.scalars(query)
            ]

    def open_shard_count(self, batch_id: int) -> int:
        query = select(BatchShard.id).where(
            BatchShard.batch_id == batch_id, BatchShard.state.in_(OPEN_SHARD_STATES)
        )
        with self.engine.connect() as conn:
            return len(conn.scalars(query).all())
