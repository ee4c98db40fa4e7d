"""The tables of batch mode: a batch's shards (one provider batch each) and their items.

A shard is one JSONL file of a batch-mode batch and the provider batch made from it. Its
life (:class:`ShardState`): ``pending`` (items chosen; a worker builds, uploads and creates
the provider batch, under the shard's lease) → ``submitted`` (the dispatcher polls the
provider) → ``collecting`` (the provider batch ended; a worker reads its output and error
files into the items) → ``done`` (its items are free again). ``lines`` is set when the
shard's calls are counted (its item set is final from then on); ``file_id`` before the
provider batch is created, so a restarted worker reuses the upload instead of making it
again.

Items stay ``queued`` while a shard holds them (their calls are counted and in flight as
attempt rows); a ``shard_items`` row says which shard holds an item, at most one at a time.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, Boolean, ForeignKey, Index, Integer, String, Text, false
from sqlalchemy.orm import Mapped, mapped_column

from qocr.models.base import Base, UTCDateTime, string_enum, utcnow
from qocr.models.entities import BigId


class ShardState(StrEnum):
    """Where a shard stands on our side (the provider's status is a column of its own)."""

    PENDING = "pending"
    SUBMITTED = "submitted"
    COLLECTING = "collecting"
    DONE = "done"


OPEN_SHARD_STATES = (ShardState.PENDING, ShardState.SUBMITTED, ShardState.COLLECTING)
# The states in which a worker has work to do on a shard.
WORKER_SHARD_STATES = (ShardState.PENDING, ShardState.COLLECTING)


class BatchShard(Base):
    __tablename__ = "batch_shards"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"))
    state: Mapped[ShardState] = mapped_column(
        string_enum(ShardState, "shard_state"), default=ShardState.PENDING
    )
    # Lines in the uploaded file (None until the calls are counted) and its size.
    lines: Mapped[int | None] = mapped_column(Integer)
    bytes: Mapped[int | None] = mapped_column(BigInteger)
    file_id: Mapped[str | None] = mapped_column(Text)
    provider_batch_id: Mapped[str | None] = mapped_column(Text)
    provider_status: Mapped[str | None] = mapped_column(Text)
    request_total: Mapped[int] = mapped_column(Integer, default=0)
    request_completed: Mapped[int] = mapped_column(Integer, default=0)
    request_failed: Mapped[int] = mapped_column(Integer, default=0)
    output_file_id: Mapped[str | None] = mapped_column(Text)
    error_file_id: Mapped[str | None] = mapped_column(Text)
    error_message: Mapped[str | None] = mapped_column(Text)
    # True once the provider was asked to cancel (the batch was cancelled or stopped).
    cancel_requested: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    # The worker building or collecting it; a dead worker's shard goes to another after this.
    lease_token: Mapped[str | None] = mapped_column(String(32))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    # When a worker task was last sent for it, and when the provider was last asked.
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    polled_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow, onupdate=utcnow)
    submitted_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (Index("ix_batch_shards_batch_id_state", "batch_id", "state"),)


class ShardItem(Base):
    __tablename__ = "shard_items"

    # The primary key is the item: at most one shard holds an item at a time.
    item_id: Mapped[int] = mapped_column(
        BigId, ForeignKey("items.id", ondelete="CASCADE"), primary_key=True
    )
    shard_id: Mapped[int] = mapped_column(ForeignKey("batch_shards.id", ondelete="CASCADE"))

    __table_args__ = (Index("ix_shard_items_shard_id_item_id", "shard_id", "item_id"),)
