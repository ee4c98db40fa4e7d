"""Completion webhooks in SQL: one delivery row per batch end, claimed under a lease.

A batch with a ``notify_url`` that ends (completed, stopped, cancelled) gets one row here,
UNIQUE per (batch, ``finished_at``): a batch retried and ended again is a new end and a new
row, and however many notifiers see the same end, it has one row. The body (the batch's
``status --json`` document at its end) is frozen in the row, so every attempt sends the
same bytes under the same ``delivery_id``.

Sending follows the items' pattern: a sender claims due rows with one conditional UPDATE
that sets a lease token and counts the attempt before the request leaves; it records the
outcome only while its token still holds the row. A sender that dies mid-request leaves
the row leased; when the lease runs out another sender claims it and sends again.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import (
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    exists,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlalchemy.orm import Mapped, mapped_column

from qocr.models.base import Base, UTCDateTime, string_enum, utcnow
from qocr.models.db import EngineBound, rows_changed
from qocr.models.entities import Batch
from qocr.models.states import BatchState
from qocr.models.text_caps import MESSAGE_MAX_CHARS, cap

ENDED_BATCH_STATES = (BatchState.COMPLETED, BatchState.STOPPED, BatchState.CANCELLED)


class DeliveryState(StrEnum):
    """Where one webhook delivery stands. Stored as the lowercase value."""

    PENDING = "pending"  # not answered 2xx yet; tried again at next_attempt_at
    DELIVERED = "delivered"  # the receiver answered 2xx
    FAILED = "failed"  # given up: no 2xx within the retry horizon


class WebhookDelivery(Base):
    __tablename__ = "webhook_deliveries"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # Sent as X-Qocr-Delivery, the same on every attempt: the receiver's dedupe key.
    delivery_id: Mapped[str] = mapped_column(String(32))
    batch_id: Mapped[int] = mapped_column(ForeignKey("batches.id", ondelete="CASCADE"))
    # Which end of the batch this is (a retried batch ends again, later).
    batch_finished_at: Mapped[datetime] = mapped_column(UTCDateTime)
    event: Mapped[str] = mapped_column(String(16))  # the state the batch ended in
    url: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    state: Mapped[DeliveryState] = mapped_column(
        string_enum(DeliveryState, "webhook_delivery_state"),
        default=DeliveryState.PENDING,
    )
    # Counted when a sender claims the row, before the request leaves.
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[datetime] = mapped_column(UTCDateTime)
    lease_token: Mapped[str | None] = mapped_column(String(32))
    lease_until: Mapped[datetime | None] = mapped_column(UTCDateTime)
    last_http_status: Mapped[int | None] = mapped_column(Integer)
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    delivered_at: Mapped[datetime | None] = mapped_column(UTCDateTime)

    __table_args__ = (
        UniqueConstraint("batch_id", "batch_finished_at"),
        Index("ix_webhook_deliveries_batch_id", "batch_id"),
        # The senders' pick: pending rows, soonest first.
        Index(
            "ix_webhook_deliveries_due",
            "next_attempt_at",
            sqlite_where=text("state = 'pending'"),
            postgresql_where=text("state = 'pending'"),
        ),
    )


@dataclass(frozen=True)
class EndedBatch:
    """A batch that ended with a webhook to send and no delivery row for this end yet."""

    batch_id: int
    state: BatchState
    finished_at: datetime
    notify_url: str


@dataclass(frozen=True)
class ClaimedDelivery:
    """A delivery a sender holds under ``lease_token``: what to send, and where."""

    id: int
    delivery_id: str
    batch_id: int
    event: str
    url: str
    body: str
    attempts: int  # this one included
    created_at: datetime
    lease_token: str


@dataclass(frozen=True)
class DeliveryInfo:
    """One delivery as ``qocr status`` shows it."""

    delivery_id: str
    event: str
    url: str
    state: DeliveryState
    attempts: int
    last_http_status: int | None
    last_error: str | None
    created_at: datetime
    next_attempt_at: datetime | None
    delivered_at: datetime | None


class WebhookStore(EngineBound):
    """Every query of completion webhooks."""

    def ended_without_delivery(self, since: datetime, limit: int = 100) -> list[EndedBatch]:
        """Batches with a ``notify_url`` that ended after ``since`` and have no row for it."""
        delivered = exists().where(
            WebhookDelivery.batch_id == Batch.id,
            WebhookDelivery.batch_finished_at == Batch.finished_at,
        )
        query = (
            select(Batch.id, Batch.state, Batch.finished_at, Batch.notify_url)
            .where(
                Batch.notify_url.is_not(None),
                Batch.finished_at > since,
                Batch.state.in_(ENDED_BATCH_STATES),
                ~delivered,
            )
            .order_by(Batch.finished_at)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [
                EndedBatch(row.id, BatchState(row.state), row.finished_at, row.notify_url)
                for row in conn.execute(query)
                if row.finished_at is not None and row.notify_url is not None
            ]

    def add(self, ended: EndedBatch, body: str, now: datetime | None = None) -> bool:
        """Queue the delivery of ``ended``; False when a row for that end exists already."""
        now = now or utcnow()
        insert = pg_insert if self.dialect == "postgresql" else sqlite_insert
        statement = (
            insert(WebhookDelivery)
            .values(
                delivery_id=uuid.uuid4().hex,
                batch_id=ended.batch_id,
                batch_finished_at=ended.finished_at,
                event=ended.state.value,
                url=ended.notify_url,
                body=body,
                state=DeliveryState.PENDING,
                attempts=0,
                next_attempt_at=now,
                created_at=now,
            )
            .on_conflict_do_nothing(index_elements=["batch_id", "batch_finished_at"])
        )
        with self.engine.begin() as conn:
            return rows_changed(conn.execute(statement)) == 1

    def claim_due(
        self, limit: int, lease_until: datetime, now: datetime | None = None
    ) -> list[ClaimedDelivery]:
        """Lease up to ``limit`` due deliveries (unleased, or whose lease ran out), counting
        the attempt each is about to make."""
        if limit <= 0:
            return []
        now = now or utcnow()
        token = uuid.uuid4().hex
        claimable = (
            WebhookDelivery.state == DeliveryState.PENDING,
            WebhookDelivery.next_attempt_at <= now,
            or_(WebhookDelivery.lease_until.is_(None), WebhookDelivery.lease_until < now),
        )
        due = select(WebhookDelivery.id).where(*claimable)
        due = due.order_by(WebhookDelivery.next_attempt_at).limit(limit)
        if self.dialect == "postgresql":
            due = due.with_for_update(skip_locked=True)
        statement = (
            update(WebhookDelivery)
            .where(WebhookDelivery.id.in_(due.scalar_subquery()), *claimable)
            .values(
                lease_token=token,
                lease_until=lease_until,
                attempts=WebhookDelivery.attempts + 1,
            )
            .returning(
                WebhookDelivery.id,
                WebhookDelivery.delivery_id,
                WebhookDelivery.batch_id,
                WebhookDelivery.event,
                WebhookDelivery.url,
                WebhookDelivery.body,
                WebhookDelivery.attempts,
                WebhookDelivery.created_at,
            )
        )
        with self.engine.begin() as conn:
            rows = conn.execute(statement).all()
        return [
            ClaimedDelivery(
                id=row.id,
                delivery_id=row.delivery_id,
                batch_id=row.batch_id,
                event=row.event,
                url=row.url,
                body=row.body,
                attempts=row.attempts,
                created_at=row.created_at,
                lease_token=token,
            )
            for row in sorted(rows, key=lambda row: row.id)
        ]

    def mark_delivered(self, claimed: ClaimedDelivery, http_status: int) -> bool:
        """The receiver answered 2xx; False when this sender's lease had passed on."""
        now = utcnow()
        return self._finish(
            claimed,
            state=DeliveryState.DELIVERED,
            delivered_at=now,
            next_attempt_at=now,
            last_http_status=http_status,
            last_error=None,
        )

    def mark_failed(
        self,
        claimed: ClaimedDelivery,
        http_status: int | None,
        error: str,
        next_attempt_at: datetime,
        give_up: bool,
    ) -> bool:
        """No 2xx: try again at ``next_attempt_at``, or (``give_up``) never again."""
        return self._finish(
            claimed,
            state=DeliveryState.FAILED if give_up else DeliveryState.PENDING,
            next_attempt_at=next_attempt_at,
            last_http_status=http_status,
            last_error=cap(error, MESSAGE_MAX_CHARS),
        )

    def _finish(self, claimed: ClaimedDelivery, **values: object) -> bool:
        statement = (
            update(WebhookDelivery)
            .where(
                WebhookDelivery.id == claimed.id,
                WebhookDelivery.state == DeliveryState.PENDING,
                WebhookDelivery.lease_token == claimed.lease_token,
            )
            .values(lease_token=None, lease_until=None, **values)
        )
        with self.engine.begin() as conn:
            return rows_changed(conn.execute(statement)) == 1

    def for_batch(self, batch_id: int) -> list[DeliveryInfo]:
        """The batch's deliveries, oldest first."""
        query = (
            select(WebhookDelivery)
            .where(WebhookDelivery.batch_id == batch_id)
            .order_by(WebhookDelivery.id)
        )
        with self.sessions() as session:
            return [
                DeliveryInfo(
                    delivery_id=row.delivery_id,
                    event=row.event,
                    url=row.url,
                    state=row.state,
                    attempts=row.attempts,
                    last_http_status=row.last_http_status,
                    last_error=row.last_error,
                    created_at=row.created_at,
                    next_attempt_at=(
                        row.next_attempt_at if row.state == DeliveryState.PENDING else None
                    ),
                    delivered_at=row.delivered_at,
                )
                for row in session.scalars(query)
            ]
