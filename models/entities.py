"""The tables: a batch of items, each item's attempts, and at most one result per item.

Strings a user or the provider chooses (names, models, codes, request ids) are TEXT: any
length may arrive, and a value too long for its column would fail the whole write.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    and_,
    literal_column,
    or_,
    text,
    true,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship
from sqlalchemy.sql.elements import ColumnElement

from qocr.models.base import (
    Base,
    OrderedJSON,
    PortableJSON,
    UTCDateTime,
    string_enum,
    utcnow,
)
from qocr.models.states import AttemptOutcome, BatchState, ItemState

# An item waiting in the queue: queued and not in the broker, as a submit writes every item.
# The predicate of two partial indexes below, and (its negation) of a third on PostgreSQL.
WAITING = "state = 'queued' AND dispatched_at IS NULL"
# The transaction's start (PostgreSQL) or the statement's (SQLite), in UTC on both.
_NOW = text("CURRENT_TIMESTAMP")
# BigInteger ids for rows counted in millions; SQLite needs INTEGER to alias its rowid.
BigId = BigInteger().with_variant(Integer(), "sqlite")


def source_digest(source: str) -> str:
    """The value of ``Item.source_sha256`` for ``source``."""
    return hashlib.sha256(source.encode("utf-8")).hexdigest()


class Batch(Base):
    __tablename__ = "batches"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    api: Mapped[str] = mapped_column(String(16))
    model: Mapped[str] = mapped_column(Text)
    task: Mapped[str | None] = mapped_column(Text)
    prompt: Mapped[str | None] = mapped_column(Text)
    # JSON, not JSONB: the schema's keys stay in the order the user wrote them.
    result_schema: Mapped[dict[str, Any] | None] = mapped_column(OrderedJSON)
    # Every request option (pixels, rotation, max_tokens, stream, sampling), as the client's
    # RecognizeOptions.to_dict(): the worker rebuilds the request from it.
    options: Mapped[dict[str, Any]] = mapped_column(OrderedJSON)
    # How sources are read (e.g. s3_mode), separate from what the model is asked.
    source_options: Mapped[dict[str, Any]] = mapped_column(PortableJSON, default=dict)
    state: Mapped[BatchState] = mapped_column(
        string_enum(BatchState, "batch_state"), default=BatchState.RUNNING
    )
    stop_reason: Mapped[str | None] = mapped_column(Text)
    total_items: Mapped[int] = mapped_column(Integer, default=0)
    schedule_name: Mapped[str | None] = mapped_column(Text)
    scheduled_for: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # An idempotent submit's key (UNIQUE: a second submit with it finds this batch) and the
    # sha256 of the request it was made for (scheduler/idempotency.py).
    idempotency_key: Mapped[str | None] = mapped_column(Text)
    request_sha256: Mapped[str | None] = mapped_column(String(64))
    # Where the batch's end is POSTed (scheduler/notify.py); None: no webhook.
    notify_url: Mapped[str | None] = mapped_column(Text)
    # "realtime" (one call per item) or "batch" (the provider's Batch API, in shards:
    # models/shards.py); the dispatcher publishes realtime batches' items only.
    mode: Mapped[str] = mapped_column(String(16), default="realtime", server_default="realtime")

    items: Mapped[list[Item]] = relationship(
        back_populates="batch", lazy="raise", primaryjoin="Batch.id == foreign(Item.batch_id)"
    )

    __table_args__ = (
        # One batch per schedule slot, however often beat fires for it.
        UniqueConstraint("schedule_name", "scheduled_for"),
        # One batch per idempotency key, however many submits race with it.
        UniqueConstraint("idempotency_key"),
        Index("ix_batches_state_created_at", "state", "created_at"),
        # The notifier's scan for ended batches whose webhook is not queued yet.
        Index(
            "ix_batches_notify_finished",
            "finished_at",
            sqlite_where=text("notify_url IS NOT NULL"),
            postgresql_where=text("notify_url IS NOT NULL"),
        ),
    )


class Item(Base):
    """An image to read (or a document to split into pages), in one batch.

    No foreign keys and no unique index on items: a submit COPYs a million rows, and each
    cost seconds per million (migration 0011). Integrity holds by construction: nothing
    deletes a batch or an item; a submit inserts into the batch it made in the same
    transaction and then deletes the sources listed twice (models/new_items.py); a
    document's pages copy the batch and item id of the document their worker holds.
    """

    __tablename__ = "items"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    batch_id: Mapped[int] = mapped_column(Integer)
    source: Mapped[str] = mapped_column(Text)
    # source_digest(source): what makes a source unique in its batch (kept once at submit).
    # A digest, not the source: presigned URLs get longer than a btree entry may be.
    source_sha256: Mapped[str] = mapped_column(String(64))
    # What identifies the content without reading it: an S3 ETag, or size+mtime of a file.
    fingerprint: Mapped[str | None] = mapped_column(Text)
    # Server defaults too: COPY at submit sends only the columns above.
    state: Mapped[ItemState] = mapped_column(
        string_enum(ItemState, "item_state"), default=ItemState.QUEUED, server_default="queued"
    )
    attempts: Mapped[int] = mapped_column(Integer, default=0, server_default="0")
    last_error_code: Mapped[str | None] = mapped_column(Text)
    last_error_message: Mapped[str | None] = mapped_column(Text)
    # Not before this time (a retry's back-off); NULL means now.
    not_before: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When a message for it was published; NULL means it is not in the broker.
    dispatched_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    lease_token: Mapped[str | None] = mapped_column(String(32))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, server_default=_NOW)
    updated_at: Mapped[datetime] = mapped_column(
        UTCDateTime, default=utcnow, onupdate=utcnow, server_default=_NOW
    )
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # A page of a document (models/document_pages.py): the document's item and the page
    # number, from 1. NULL for an item made from a source at submit.
    parent_item_id: Mapped[int | None] = mapped_column(BigId)
    page: Mapped[int | None] = mapped_column(Integer)

    batch: Mapped[Batch] = relationship(
        back_populates="items", lazy="raise", primaryjoin="Batch.id == foreign(Item.batch_id)"
    )
    result: Mapped[Result | None] = relationship(back_populates="item", lazy="raise")

    __table_args__ = (
        # One batch's items in one state (cancel, retry, open-item checks, exports by
        # state), and its recently finished ones (throughput) as a range of this index.
        # On PostgreSQL it leaves out the items waiting in the queue, which the next index
        # holds: a submit writes one index entry a row fewer (~1 s a million, migration
        # 0013), and queries about a batch's queued items ask both (waiting, moved_on).
        # SQLite keeps every item: it uses a partial index only for terms it matches
        # literally, and its submits are not COPYs of millions.
        Index(
            "ix_items_batch_state_finished",
            "batch_id",
            "state",
            "finished_at",
            postgresql_where=text(f"NOT ({WAITING})"),
        ),
        # The dispatcher's pick: queued, not in the broker, oldest first.
        Index(
            "ix_items_undispatched",
            "batch_id",
            "id",
            sqlite_where=text(WAITING),
            postgresql_where=text(WAITING),
        ),
        # The dispatcher's retry pass: items that ran before and wait for their not_before
        # (a handful next to the queue; submit adds none).
        Index(
            "ix_items_retries_due",
            "batch_id",
            "id",
            sqlite_where=text(
                "state = 'queued' AND dispatched_at IS NULL AND not_before IS NOT NULL"
            ),
            postgresql_where=text(
                "state = 'queued' AND dispatched_at IS NULL AND not_before IS NOT NULL"
            ),
        ),
        # The reaper's scans: expired leases, and messages the broker may have lost.
        Index(
            "ix_items_running_lease",
            "lease_until",
            sqlite_where=text("state = 'running'"),
            postgresql_where=text("state = 'running'"),
        ),
        Index(
            "ix_items_in_broker",
            "dispatched_at",
            sqlite_where=text("state = 'queued' AND dispatched_at IS NOT NULL"),
            postgresql_where=text("state = 'queued' AND dispatched_at IS NOT NULL"),
        ),
        # One item per page of a document, however often its expansion is tried; and a
        # document's pages in order. Partial: items made at submit add no entry.
        Index(
            "ux_items_parent_page",
            "parent_item_id",
            "page",
            unique=True,
            sqlite_where=text("parent_item_id IS NOT NULL"),
            postgresql_where=text("parent_item_id IS NOT NULL"),
        ),
    )


_QUEUED: ColumnElement[str] = literal_column(f"'{ItemState.QUEUED.value}'")


def waiting() -> ColumnElement[bool]:
    """Items waiting in the queue (WAITING), in a form PostgreSQL matches to the partial
    indexes: the state a literal, not a parameter, so a cached generic plan can use them."""
    return and_(Item.state == _QUEUED, Item.dispatched_at.is_(None))


def moved_on() -> ColumnElement[bool]:
    """Items not waiting in the queue: those ``ix_items_batch_state_finished`` holds."""
    return or_(Item.state != _QUEUED, Item.dispatched_at.is_not(None))


# Outside the class: in its body, `text` is the result's column.
_PAID_ONLY = text("cached_from IS NULL")


class Result(Base):
    __tablename__ = "results"

    # The primary key is the item: at most one result per item, whatever crashes.
    item_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("items.id", ondelete="CASCADE"), primary_key=True
    )
    text: Mapped[str] = mapped_column(Text)
    kv_result: Mapped[Any | None] = mapped_column(PortableJSON)
    words_info: Mapped[list[Any] | None] = mapped_column(PortableJSON)
    parsed: Mapped[Any | None] = mapped_column(PortableJSON)
    finish_reason: Mapped[str | None] = mapped_column(Text)
    request_id: Mapped[str | None] = mapped_column(Text)
    model: Mapped[str | None] = mapped_column(Text)
    input_tokens: Mapped[int] = mapped_column(Integer, default=0)
    output_tokens: Mapped[int] = mapped_column(Integer, default=0)
    image_tokens: Mapped[int] = mapped_column(Integer, default=0)
    total_tokens: Mapped[int] = mapped_column(Integer, default=0)
    latency_ms: Mapped[float | None] = mapped_column(Float)
    # What the result cache keys on (worker/cache.py): the image's sha256 (for a URL source
    # read with --cache-urls, a sha256 of the URL and its validators) and the request's
    # fingerprint (RecognizeOptions.fingerprint with the API).
    image_sha256: Mapped[str | None] = mapped_column(String(64))
    options_fingerprint: Mapped[str | None] = mapped_column(String(64))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    # A result reused from the cache: the item whose paid result it copies (not a foreign
    # key: that batch may be deleted), and that result's token counts, for reference. Its
    # own token columns are 0: nothing was billed for it.
    cached_from: Mapped[int | None] = mapped_column(BigId)
    original_input_tokens: Mapped[int | None] = mapped_column(Integer)
    original_output_tokens: Mapped[int | None] = mapped_column(Integer)
    original_image_tokens: Mapped[int | None] = mapped_column(Integer)
    original_total_tokens: Mapped[int | None] = mapped_column(Integer)

    item: Mapped[Item] = relationship(back_populates="result", lazy="raise")

    __table_args__ = (
        # The cache's lookup: paid results (never copies) of one key, newest first.
        Index(
            "ix_results_cache_key",
            "image_sha256",
            "options_fingerprint",
            "created_at",
            sqlite_where=_PAID_ONLY,
            postgresql_where=_PAID_ONLY,
        ),
    )


class Attempt(Base):
    __tablename__ = "attempts"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    item_id: Mapped[int] = mapped_column(ForeignKey("items.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)
    outcome: Mapped[AttemptOutcome] = mapped_column(string_enum(AttemptOutcome, "attempt_outcome"))
    started_at: Mapped[datetime] = mapped_column(UTCDateTime)
    # None while the call is in flight.
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # True when the try sent a request to the provider (False: it ended before one).
    called: Mapped[bool] = mapped_column(Boolean, server_default=true())
    http_status: Mapped[int | None] = mapped_column(Integer)
    error_code: Mapped[str | None] = mapped_column(Text)
    error_message: Mapped[str | None] = mapped_column(Text)
    request_id: Mapped[str | None] = mapped_column(Text)
    retry_after: Mapped[float | None] = mapped_column(Float)
    worker: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (UniqueConstraint("item_id", "number"),)
