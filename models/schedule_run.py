"""Scheduled runs: one row per schedule and slot, and the queries a run makes.

A row is written when a run starts (outcome ``running``) and finished with what it did:
``batch_created`` (with the batch and its item count), ``nothing_new`` (no batch: every
source was already done), or ``failed`` (a source error, with its code). UNIQUE(schedule,
slot) matches the one on ``batches``: however often a slot is ticked, it has one row.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    func,
    select,
    text,
    update,
)
from sqlalchemy.orm import Mapped, mapped_column

from qocr.models.base import Base, UTCDateTime, string_enum, utcnow
from qocr.models.db import EngineBound, rows_changed
from qocr.models.entities import Batch
from qocr.models.schedule_sources import done_versions_query
from qocr.models.states import BatchState
from qocr.models.text_caps import CODE_MAX_CHARS, MESSAGE_MAX_CHARS, cap

FINISHED_BATCH_STATES = (BatchState.COMPLETED, BatchState.CANCELLED, BatchState.STOPPED)


class RunOutcome(StrEnum):
    """What a scheduled run did. Stored as the lowercase value."""

    RUNNING = "running"
    BATCH_CREATED = "batch_created"
    NOTHING_NEW = "nothing_new"
    FAILED = "failed"


FINISHED_OUTCOMES = frozenset({RunOutcome.BATCH_CREATED, RunOutcome.NOTHING_NEW})


class ScheduleRun(Base):
    __tablename__ = "schedule_runs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    schedule_name: Mapped[str] = mapped_column(Text)
    scheduled_for: Mapped[datetime] = mapped_column(UTCDateTime)
    # "beat" (the tick) or "manual" (`qocr schedule run`).
    triggered_by: Mapped[str] = mapped_column(String(16))
    outcome: Mapped[RunOutcome] = mapped_column(
        string_enum(RunOutcome, "schedule_run_outcome"),
        default=RunOutcome.RUNNING,
    )
    attempts: Mapped[int] = mapped_column(Integer, default=1)
    started_at: Mapped[datetime] = mapped_column(UTCDateTime, default=utcnow)
    finished_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    batch_id: Mapped[int | None] = mapped_column(ForeignKey("batches.id", ondelete="SET NULL"))
    new_items: Mapped[int] = mapped_column(Integer, default=0)
    error_code: Mapped[str | None] = mapped_column(Text)
    error_message: Mapped[str | None] = mapped_column(Text)
    # Where the batch's results go when it ends (the schedule's results_to, filled in).
    export_uri: Mapped[str | None] = mapped_column(Text)
    exported_at: Mapped[datetime | None] = mapped_column(UTCDateTime)
    export_attempts: Mapped[int] = mapped_column(Integer, default=0)
    export_error: Mapped[str | None] = mapped_column(Text)

    __table_args__ = (
        UniqueConstraint("schedule_name", "scheduled_for"),
        # The tick's scan for results still to export.
        Index(
            "ix_schedule_runs_export_pending",
            "batch_id",
            sqlite_where=text("export_uri IS NOT NULL AND exported_at IS NULL"),
            postgresql_where=text("export_uri IS NOT NULL AND exported_at IS NULL"),
        ),
    )


@dataclass(frozen=True)
class PendingExport:
    run_id: int
    schedule_name: str
    batch_id: int
    export_uri: str
    attempts: int


class ScheduleRunStore(EngineBound):
    """Every query of scheduled runs; batches and items are written by ``models.store``."""

    def get(self, schedule_name: str, slot: datetime) -> ScheduleRun | None:
        with self.sessions() as session:
            return session.scalar(
                select(ScheduleRun).where(
                    ScheduleRun.schedule_name == schedule_name, ScheduleRun.scheduled_for == slot
                )
            )

    def start(
        self, schedule_name: str, slot: datetime, triggered_by: str, now: datetime
    ) -> ScheduleRun | None:
        """Insert the run as ``running``, or restart a failed or interrupted one.

        None when the slot's run has finished meanwhile (it is never started again). The
        UNIQUE constraint makes a concurrent first insert fail with an IntegrityError.
        """
        with self.sessions.begin() as session:
            existing = session.scalar(
                select(ScheduleRun.id).where(
                    ScheduleRun.schedule_name == schedule_name, ScheduleRun.scheduled_for == slot
                )
            )
            if existing is None:
                run = ScheduleRun(
                    schedule_name=schedule_name,
                    scheduled_for=slot,
                    triggered_by=triggered_by,
                    outcome=RunOutcome.RUNNING,
                    attempts=1,
                    started_at=now,
                    new_items=0,
                    export_attempts=0,
                )
                session.add(run)
                session.flush()
                return run
            restarted = session.execute(
                update(ScheduleRun)
                .where(
                    ScheduleRun.id == existing,
                    ScheduleRun.outcome.in_((RunOutcome.RUNNING, RunOutcome.FAILED)),
                )
                .values(
                    outcome=RunOutcome.RUNNING,
                    attempts=ScheduleRun.attempts + 1,
                    started_at=now,
                    finished_at=None,
                    error_code=None,
                    error_message=None,
                )
            )
            if rows_changed(restarted) == 0:
                return None
            return session.get(ScheduleRun, existing, populate_existing=True)

    def finish(
        self,
        run: ScheduleRun,
        outcome: RunOutcome,
        now: datetime,
        *,
        batch_id: int | None = None,
        new_items: int = 0,
        export_uri: str | None = None,
        error_code: str | None = None,
        error_message: str | None = None,
    ) -> bool:
        """Record how ``run`` ended; False when a later attempt has taken the run over."""
        with self.sessions.begin() as session:
            result = session.execute(
                update(ScheduleRun)
                .where(
                    ScheduleRun.id == run.id,
                    ScheduleRun.outcome == RunOutcome.RUNNING,
                    ScheduleRun.attempts == run.attempts,
                )
                .values(
                    outcome=outcome,
                    finished_at=now,
                    batch_id=batch_id,
                    new_items=new_items,
                    export_uri=export_uri,
                    error_code=cap(error_code, CODE_MAX_CHARS),
                    error_message=cap(error_message, MESSAGE_MAX_CHARS),
                )
            )
            return rows_changed(result) == 1

    def last_runs(self, names: Sequence[str]) -> dict[str, ScheduleRun]:
        """The most recent run (by slot) of each named schedule that has one."""
        if not names:
            return {}
        latest = (
            select(ScheduleRun.schedule_name, func.max(ScheduleRun.scheduled_for).label("slot"))
            .where(ScheduleRun.schedule_name.in_(list(names)))
            .group_by(ScheduleRun.schedule_name)
            .subquery()
        )
        query = select(ScheduleRun).join(
            latest,
            (ScheduleRun.schedule_name == latest.c.schedule_name)
            & (ScheduleRun.scheduled_for == latest.c.slot),
        )
        with self.sessions() as session:
            return {run.schedule_name: run for run in session.scalars(query)}

    # -- batches of a schedule ----------------------------------------------------------

    def batch_for_slot(self, schedule_name: str, slot: datetime) -> tuple[int, int] | None:
        """(id, item count) of the batch already made for this slot, if any."""
        with self.sessions() as session:
            row = session.execute(
                select(Batch.id, Batch.total_items).where(
                    Batch.schedule_name == schedule_name, Batch.scheduled_for == slot
                )
            ).first()
            return None if row is None else (int(row.id), int(row.total_items))

    def done_versions(self, schedule_name: str, sources: Sequence[str]) -> set[tuple[str, Any]]:
        """(source, fingerprint) pairs among ``sources`` that an earlier batch of this
        schedule holds as succeeded, queued or running (batches of ``only_new`` runs: the
        only ones recorded in ``schedule_sources``)."""
        if not sources:
            return set()
        query = done_versions_query(schedule_name, sources)
        with self.sessions() as session:
            return {(row.source, row.fingerprint) for row in session.execute(query)}

    # -- exports ------------------------------------------------------------------------

    def pending_exports(self, max_attempts: int) -> list[PendingExport]:
        """Runs whose batch has ended and whose results are not yet exported."""
        query = (
            select(ScheduleRun)
            .join(Batch, Batch.id == ScheduleRun.batch_id)
            .where(
                ScheduleRun.export_uri.is_not(None),
                ScheduleRun.exported_at.is_(None),
                ScheduleRun.export_attempts < max_attempts,
                Batch.state.in_(FINISHED_BATCH_STATES),
            )
            .order_by(ScheduleRun.id)
        )
        with self.sessions() as session:
            return [
                PendingExport(
                    run_id=run.id,
                    schedule_name=run.schedule_name,
                    batch_id=run.batch_id,
                    export_uri=run.export_uri,
                    attempts=run.export_attempts,
                )
                for run in session.scalars(query)
                if run.batch_id is not None and run.export_uri is not None
            ]

    def is_exported(self, run_id: int) -> bool:
        with self.sessions() as session:
            return (
                session.scalar(select(ScheduleRun.exported_at).where(ScheduleRun.id == run_id))
                is not None
            )

    def mark_exported(self, run_id: int, now: datetime) -> None:
        with self.sessions.begin() as session:
            session.execute(
                update(ScheduleRun)
                .where(ScheduleRun.id == run_id, ScheduleRun.exported_at.is_(None))
                .values(
                    exported_at=now,
                    export_attempts=ScheduleRun.export_attempts + 1,
                    export_error=None,
                )
            )

    def export_failed(self, run_id: int, message: str) -> None:
        with self.sessions.begin() as session:
            session.execute(
                update(ScheduleRun)
                .where(ScheduleRun.id == run_id)
                .values(
                    export_attempts=ScheduleRun.export_attempts + 1,
                    export_error=cap(message, MESSAGE_MAX_CHARS),
                )
            )
