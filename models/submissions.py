"""Idempotent submits: the batch that holds a key, and the submits that were turned down.

A batch made with an idempotency key keeps it in ``batches.idempotency_key`` (UNIQUE), with
the sha256 of the request it was made for. A submit that never became a batch (bad input
sent through the broker, a key reused for another request) is a row of
``submit_rejections``, so a producer that only reaches the broker can look up what became
of its message by the key it sent (``qocr status --key KEY``).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Index, Integer, String, Text, insert, select
from sqlalchemy.orm import Mapped, mapped_column

from qocr.models.base import Base, UTCDateTime, utcnow
from qocr.models.db import EngineBound
from qocr.models.entities import Batch
from qocr.models.text_caps import CODE_MAX_CHARS, MESSAGE_MAX_CHARS, cap


class SubmitRejection(Base):
    __tablename__ = "submit_rejections"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    # As sent (capped: a key too long to be valid is still recorded, and stays indexable).
    idempotency_key: Mapped[str] = mapped_column(Text)
    # None when the request could not even be read (sources not a list, unknown option).
    request_sha256: Mapped[str | None] = mapped_column(String(64))
    error_code: Mapped[str] = mapped_column(Text)
    error_message: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)

    __table_args__ = (Index("ix_submit_rejections_key", "idempotency_key", "id"),)


@dataclass(frozen=True)
class KeyedBatch:
    """The batch an idempotency key made."""

    batch_id: int
    total: int
    request_sha256: str | None
    created_at: datetime


@dataclass(frozen=True)
class Rejection:
    """A submit that made no batch, and why."""

    idempotency_key: str
    request_sha256: str | None
    code: str
    message: str
    created_at: datetime


class Submissions(EngineBound):
    """The queries of idempotent submits; the batch itself is written by ``models.store``."""

    def batch_for_key(self, key: str) -> KeyedBatch | None:
        query = select(Batch.id, Batch.total_items, Batch.request_sha256, Batch.created_at).where(
            Batch.idempotency_key == key
        )
        with self.engine.connect() as conn:
            row = conn.execute(query).first()
        if row is None:
            return None
        return KeyedBatch(int(row.id), int(row.total_items), row.request_sha256, row.created_at)

    def record_rejection(
        self, key: str, request_sha256: str | None, code: str, message: str
    ) -> Rejection:
        rejection = Rejection(
            idempotency_key=cap(key, CODE_MAX_CHARS),
            request_sha256=request_sha256,
            code=cap(code, CODE_MAX_CHARS),
            message=cap(message, MESSAGE_MAX_CHARS),
            created_at=utcnow(),
        )
        with self.engine.begin() as conn:
            conn.execute(
                insert(SubmitRejection).values(
                    idempotency_key=rejection.idempotency_key,
                    request_sha256=rejection.request_sha256,
                    error_code=rejection.code,
                    error_message=rejection.message,
                    created_at=rejection.created_at,
                )
            )
        return rejection

    def latest_rejection(self, key: str) -> Rejection | None:
        query = (
            select(SubmitRejection)
            .where(SubmitRejection.idempotency_key == cap(key, CODE_MAX_CHARS))
            .order_by(SubmitRejection.id.desc())
            .limit(1)
        )
        with self.sessions() as session:
            row = session.scalar(query)
        if row is None:
            return None
        return Rejection(
            idempotency_key=row.idempotency_key,
            request_sha256=row.request_sha256,
            code=row.error_code,
            message=row.error_message,
            created_at=row.created_at,
        )
