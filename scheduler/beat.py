"""Celery glue for schedules: the tick task the workers run, and `qocr beat`, which sends it.

Beat keeps no schedule state of its own (an in-memory scheduler, no shelve file): it only
sends ``qocr.schedule_tick`` every ``tick_seconds``. Any worker runs the tick, which reads
the schedules file and materializes due slots (see :mod:`scheduler.runs`); a late, lost or
duplicated tick is harmless because each slot runs once, by the database's constraints.
Register the task in the worker's app with ``register_schedule_tasks(app)``.
"""

from __future__ import annotations

import logging
import threading
from functools import cached_property
from typing import Any

from celery import Celery, signals

from qocr.models.db import make_engine
from qocr.models.store import Store
from qocr.s3 import make_s3_client
from qocr.scheduler.locks import schedule_locks
from qocr.scheduler.runs import RunReport, ScheduleRunner
from qocr.scheduler.schedules import ScheduleBook, ScheduleConfigError, load_schedule_book
from qocr.scheduler.sources import SourceExpander
from qocr.settings import Settings, get_settings

log = logging.getLogger(__name__)

TICK_TASK = "qocr.schedule_tick"
BEAT_ENTRY = "qocr-schedule-tick"
# A tick still queued after this is dropped; a newer one is behind it anyway.
TICK_EXPIRES_SECONDS = 600
# Listing a large prefix takes minutes. The hard limit stays below the broker's visibility
# timeout (900 s), so a running tick is never redelivered while it runs.
TICK_SOFT_TIME_LIMIT = 780
TICK_TIME_LIMIT = 840


class TickContext:
    """What the tick needs in one worker process, built on first use."""

    def __init__(self, app: Celery, settings: Settings) -> None:
        self.app = app
        self.settings = settings

    @cached_property
    def store(self) -> Store:
        return Store(make_engine(self.settings.database_url))

    @cached_property
    def runner(self) -> ScheduleRunner:
        return make_runner(self.store, self.settings, self._publish)

    def tick(self) -> dict[str, int]:
        try:
            book = load_schedule_book(self.settings.config, self.settings)
        except ScheduleConfigError as exc:
            # Beat validated this file at start; a worker without it (or with a broken
            # edit) must say so loudly, once per tick, without failing the task forever.
            log.error("schedule tick skipped: %s", exc.message)
            return {"schedules": 0, "runs": 0, "batches": 0}
        reports = self.runner.tick(book)
        return summarize(book, reports)

    def _publish(self, batch_id: int) -> None:
        from qocr.worker.service import make_dispatcher

        make_dispatcher(self.app, self.settings, self.store).top_up()

    def close(self) -> None:
        if "store" in self.__dict__:
            self.store.engine.dispose()


def make_runner(store: Store, settings: Settings, publish: Any = None) -> ScheduleRunner:
    """A runner over ``store`` with S3 and locks from the settings."""
    endpoint = settings.s3_endpoint_url
    return ScheduleRunner(
        store,
        schedule_locks(store.engine),
        expander=lambda: SourceExpander(lambda: make_s3_client(endpoint)),
        s3=lambda: make_s3_client(endpoint),
        on_batch_created=publish,
        secret=settings.api_key.get_secret_value() if settings.api_key else None,
    )


def summarize(book: ScheduleBook, reports: list[RunReport]) -> dict[str, int]:
    return {
        "schedules": len(book.schedules),
        "runs": sum(1 for report in reports if report.ran),
        "batches": sum(1 for report in reports if report.ran and report.batch_id is not None),
    }


_lock = threading.Lock()
_contexts: dict[int, TickContext] = {}


def _context(app: Celery) -> TickContext:
    with _lock:
        context = _contexts.get(id(app))
        if context is None:
            context = _contexts[id(app)] = TickContext(app, get_settings())
        return context


@signals.worker_process_init.connect  # type: ignore[untyped-decorator]
def _after_fork(**_: Any) -> None:
    # A prefork child must not reuse the parent's database connections.
    with _lock:
        _contexts.clear()


def register_schedule_tasks(app: Celery) -> None:
    """Add the tick task to ``app`` (the worker's app, and beat's for sending)."""

    @app.task(  # type: ignore[untyped-decorator]
        name=TICK_TASK,
        ignore_result=True,
        soft_time_limit=TICK_SOFT_TIME_LIMIT,
        time_limit=TICK_TIME_LIMIT,
    )
    def schedule_tick() -> dict[str, int]:
        return _context(app).tick()


def beat_schedule(tick_seconds: float) -> dict[str, Any]:
    """Beat's one entry: the tick, expiring when a newer one must be queued behind it."""
    return {
        BEAT_ENTRY: {
            "task": TICK_TASK,
            "schedule": float(tick_seconds),
            "options": {"expires": max(TICK_EXPIRES_SECONDS, 2 * tick_seconds)},
        }
    }


def run_beat(app: Celery, tick_seconds: float, loglevel: str) -> None:
    """Run Celery beat in this process until SIGTERM / SIGINT."""
    app.conf.beat_schedule = beat_schedule(tick_seconds)
    app.conf.beat_max_loop_interval = max(1.0, min(tick_seconds, 30.0))
    beat = app.Beat(
        scheduler="celery.beat:Scheduler",  # in memory: nothing to persist or corrupt
        loglevel=loglevel,
        max_interval=max(1.0, min(tick_seconds, 30.0)),
        quiet=True,
    )
    beat.run()
