"""Materialize scheduled runs: one batch per schedule and slot, of the sources not done yet.

The tick (a Celery task sent by `qocr beat`, run by a worker) calls :meth:`ScheduleRunner.tick`;
`qocr schedule run NAME` calls :meth:`ScheduleRunner.run_slot` with slot = now. A run:

1. takes the schedule's lock (:mod:`scheduler.locks`), so runs of one schedule take turns;
2. records itself in ``schedule_runs`` (UNIQUE per schedule and slot: a slot that already
   has a finished run is not run again, however many ticks or beats ask);
3. lists the sources and, with ``only_new``, drops every (source, fingerprint) that an
   earlier batch of this schedule holds as succeeded, queued or running;
4. creates the batch (``batches`` is UNIQUE per schedule and slot too) or, when nothing is
   new, no batch at all (outcome ``nothing_new``).

Missed slots: only the latest slot is ever run, and only while it is at most the
schedule's ``catch_up`` late (see :meth:`Schedule.due_slot`). A failed run (S3 down, a
missing bucket) is tried again by later ticks, at most :data:`MAX_RUN_ATTEMPTS` times and
:data:`RETRY_AFTER` apart. The tick also exports the results of ended batches to the
schedule's ``results_to``.
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy.exc import IntegrityError

from qocr.errors import QocrError
from qocr.models.base import utcnow
from qocr.models.records import SourceRow
from qocr.models.schedule_run import FINISHED_OUTCOMES, RunOutcome, ScheduleRun, ScheduleRunStore
from qocr.models.store import Store
from qocr.redact import redact_text
from qocr.scheduler.exports import batch_records, upload_jsonl
from qocr.scheduler.locks import ScheduleLocks, wait_for
from qocr.scheduler.schedules import Schedule, ScheduleBook
from qocr.scheduler.sources import SourceExpander

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

log = logging.getLogger(__name__)

MAX_RUN_ATTEMPTS = 3
RETRY_AFTER = timedelta(seconds=60)
MAX_EXPORT_ATTEMPTS = 5
# Sources are checked against earlier batches this many at a time (one query each).
ONLY_NEW_CHUNK = 500
BEAT = "beat"
MANUAL = "manual"


@dataclass(frozen=True)
class RunReport:
    """What :meth:`ScheduleRunner.run_slot` found or did for one slot."""

    schedule: str
    slot: datetime
    outcome: RunOutcome | None  # None: another process holds the schedule right now
    batch_id: int | None = None
    new_items: int = 0
    ran: bool = False  # False: the slot was already done (or not due for a retry)
    error_code: str | None = None
    error_message: str | None = None

    @classmethod
    def of(cls, run: ScheduleRun, ran: bool) -> RunReport:
        return cls(
            schedule=run.schedule_name,
            slot=run.scheduled_for,
            outcome=run.outcome,
            batch_id=run.batch_id,
            new_items=run.new_items,
            ran=ran,
            error_code=run.error_code,
            error_message=run.error_message,
        )


@dataclass(frozen=True)
class _Materialized:
    outcome: RunOutcome
    batch_id: int | None = None
    new_items: int = 0


class ScheduleRunner:
    """Runs schedules against one database; I/O comes in through the constructor."""

    def __init__(
        self,
        store: Store,
        locks: ScheduleLocks,
        expander: Callable[[], SourceExpander],
        s3: Callable[[], S3Client],
        on_batch_created: Callable[[int], None] | None = None,
        clock: Callable[[], datetime] = utcnow,
        secret: str | None = None,
    ) -> None:
        self.store = store
        self.runs = ScheduleRunStore(store.engine)
        self.locks = locks
        self._expander = expander
        self._s3 = s3
        self._on_batch_created = on_batch_created
        self._clock = clock
        self._secret = secret  # masked in exported error messages

    # -- the tick -------------------------------------------------------------------------

    def tick(self, book: ScheduleBook, now: datetime | None = None) -> list[RunReport]:
        """Run every schedule's due slot (if not done yet), then export ended batches."""
        now = now or self._clock()
        reports = []
        for schedule in book.schedules.values():
            slot = schedule.due_slot(now)
            if slot is None:
                continue
            try:
                reports.append(self.run_slot(schedule, slot, BEAT))
            except Exception:
                # The database is away: the next tick asks again; the slot is not lost.
                log.exception("schedule %s: the run for %s could not start", schedule.name, slot)
        self.export_finished()
        return reports

    # -- one slot -------------------------------------------------------------------------

    def run_slot(
        self, schedule: Schedule, slot: datetime, triggered_by: str = BEAT, wait: float = 0.0
    ) -> RunReport:
        """Run ``schedule`` for ``slot`` unless that slot is done; waits ``wait`` s for the lock."""
        existing = self.runs.get(schedule.name, slot)
        if existing is not None and not self._worth_running(schedule, existing, locked=False):
            return RunReport.of(existing, ran=False)
        with wait_for(self.locks, schedule.name, wait) as taken:
            if not taken:
                return RunReport(schedule=schedule.name, slot=slot, outcome=None)
            existing = self.runs.get(schedule.name, slot)  # again, now that we hold the lock
            if existing is not None and not self._worth_running(schedule, existing, locked=True):
                return RunReport.of(self.runs.get(schedule.name, slot) or existing, ran=False)
            try:
                run = self.runs.start(schedule.name, slot, triggered_by, self._clock())
            except IntegrityError:
                run = None  # UNIQUE(schedule_name, scheduled_for): someone else started it
            if run is None:
                # Only a process that does not share our lock gets here (the lock is what
                # keeps runs apart; the constraints are what keep the outcome right).
                current = self.runs.get(schedule.name, slot)
                if current is None:
                    return RunReport(schedule=schedule.name, slot=slot, outcome=None)
                return RunReport.of(current, ran=False)
            report = self._run(schedule, slot, run)
        if report.batch_id is not None and report.outcome is RunOutcome.BATCH_CREATED:
            self._announce(report.batch_id)
        return report

    def _worth_running(self, schedule: Schedule, run: ScheduleRun, locked: bool) -> bool:
        if run.outcome in FINISHED_OUTCOMES:
            return False
        if run.outcome is RunOutcome.RUNNING:
            if not locked:
                return True  # its runner may be alive: the lock will tell
            # We hold the lock, so whoever started this run died mid-way.
            if run.attempts < MAX_RUN_ATTEMPTS:
                return True
            self._give_up(schedule, run)
            return False
        last_try = run.finished_at or run.started_at
        return run.attempts < MAX_RUN_ATTEMPTS and self._clock() - last_try >= RETRY_AFTER

    def _give_up(self, schedule: Schedule, run: ScheduleRun) -> None:
        """Close a run interrupted too often, keeping its batch if one was committed."""
        made = self.runs.batch_for_slot(schedule.name, run.scheduled_for)
        if made is not None:
            self.runs.finish(
                run,
                RunOutcome.BATCH_CREATED,
                self._clock(),
                batch_id=made[0],
                new_items=made[1],
                export_uri=schedule.results_uri(run.scheduled_for, made[0]),
            )
            return
        self.runs.finish(
            run,
            RunOutcome.FAILED,
            self._clock(),
            error_code="run_interrupted",
            error_message=f"interrupted {run.attempts} times; not tried again",
        )

    def _run(self, schedule: Schedule, slot: datetime, run: ScheduleRun) -> RunReport:
        try:
            done = self._materialize(schedule, slot)
        except Exception as exc:
            code, message = _describe_failure(exc)
            if isinstance(exc, QocrError):
                log.warning("schedule %s: run for %s failed: %s", schedule.name, slot, message)
            else:
                log.exception("schedule %s: run for %s failed", schedule.name, slot)
            if not self.runs.finish(
                run, RunOutcome.FAILED, self._clock(), error_code=code, error_message=message
            ):
                return self._superseded(run)
            return RunReport(
                schedule=schedule.name,
                slot=slot,
                outcome=RunOutcome.FAILED,
                ran=True,
                error_code=code,
                error_message=message,
            )
        export_uri = None
        if done.batch_id is not None:
            export_uri = schedule.results_uri(slot, done.batch_id)
        if not self.runs.finish(
            run,
            done.outcome,
            self._clock(),
            batch_id=done.batch_id,
            new_items=done.new_items,
            export_uri=export_uri,
        ):
            return self._superseded(run)
        log.info(
            "schedule %s: run for %s: %s (%d new items)",
            schedule.name,
            slot.isoformat(),
            done.outcome.value,
            done.new_items,
        )
        return RunReport(
            schedule=schedule.name,
            slot=slot,
            outcome=done.outcome,
            batch_id=done.batch_id,
            new_items=done.new_items,
            ran=True,
        )

    def _materialize(self, schedule: Schedule, slot: datetime) -> _Materialized:
        made = self.runs.batch_for_slot(schedule.name, slot)
        if made is not None:  # an earlier attempt died after its batch was committed
            return _Materialized(RunOutcome.BATCH_CREATED, made[0], made[1])
        rows = self._new_rows(schedule)
        first = next(rows, None)  # bad sources raise here, before any batch exists
        if first is None:
            # Everything is done: maybe by this very slot's batch, committed meanwhile by a
            # process outside our lock. Then that batch is this run's.
            made = self.runs.batch_for_slot(schedule.name, slot)
            if made is not None:
                return _Materialized(RunOutcome.BATCH_CREATED, made[0], made[1])
            return _Materialized(RunOutcome.NOTHING_NEW)
        try:
            spec = replace(schedule.request(slot).spec(), only_new=schedule.only_new)
            batch_id, count = self.store.create_batch(spec, itertools.chain([first], rows))
        except IntegrityError:
            # UNIQUE(schedule_name, scheduled_for): another process made this slot's batch.
            made = self.runs.batch_for_slot(schedule.name, slot)
            if made is None:
                raise
            batch_id, count = made
        return _Materialized(RunOutcome.BATCH_CREATED, batch_id, count)

    def _superseded(self, run: ScheduleRun) -> RunReport:
        """A later attempt took the run over while this one worked: report what it has."""
        current = self.runs.get(run.schedule_name, run.scheduled_for)
        assert current is not None
        return RunReport.of(current, ran=False)

    def _new_rows(self, schedule: Schedule) -> Iterator[SourceRow]:
        rows = self._expander().expand(list(schedule.sources))
        if not schedule.only_new:
            yield from rows
            return
        for chunk in _chunks(rows, ONLY_NEW_CHUNK):
            done = self.runs.done_versions(schedule.name, [row.source for row in chunk])
            for row in chunk:
                if (row.source, row.fingerprint) not in done:
                    yield row

    def _announce(self, batch_id: int) -> None:
        if self._on_batch_created is None:
            return
        try:
            self._on_batch_created(batch_id)
        except Exception as exc:  # the batch is safe in SQL; a dispatcher sends it later
            log.warning("batch %s saved but not dispatched yet (%s)", batch_id, type(exc).__name__)

    # -- exports --------------------------------------------------------------------------

    def export_finished(self) -> int:
        """Export the results of every ended batch whose run asks for it; returns how many."""
        exported = 0
        for pending in self.runs.pending_exports(MAX_EXPORT_ATTEMPTS):
            with self.locks.hold(pending.schedule_name) as taken:
                if not taken or self.runs.is_exported(pending.run_id):
                    continue
                try:
                    lines = upload_jsonl(
                        self._s3(),
                        pending.export_uri,
                        batch_records(self.store.engine, pending.batch_id, self._secret),
                    )
                except Exception as exc:
                    _, message = _describe_failure(exc)
                    log.warning(
                        "schedule %s: export of batch %s to %s failed (attempt %d): %s",
                        pending.schedule_name,
                        pending.batch_id,
                        pending.export_uri,
                        pending.attempts + 1,
                        message,
                    )
                    self.runs.export_failed(pending.run_id, message)
                    continue
                self.runs.mark_exported(pending.run_id, self._clock())
                exported += 1
                log.info(
                    "schedule %s: batch %s exported to %s (%d lines)",
                    pending.schedule_name,
                    pending.batch_id,
                    pending.export_uri,
                    lines,
                )
        return exported


def _chunks(rows: Iterable[SourceRow], size: int) -> Iterator[list[SourceRow]]:
    iterator = iter(rows)
    while chunk := list(itertools.islice(iterator, size)):
        yield chunk


def _describe_failure(exc: Exception) -> tuple[str, str]:
    """A code and a message safe to store: qocr's own message, or only the error's kind."""
    if isinstance(exc, QocrError):
        return exc.code, redact_text(exc.message)
    response = getattr(exc, "response", None)
    if isinstance(response, dict):  # botocore's ClientError: keep S3's code, not its text
        code = response.get("Error", {}).get("Code", "unknown")
        return "s3_error", f"S3 said {code}"
    return "schedule_run_error", f"unexpected {type(exc).__name__} (see the worker's log)"
