"""The schedule tick: read the schedules file, run the due slots, export ended batches.

A worker runs it each time ``qocr beat`` sends the tick (the Celery glue is
:mod:`worker.beat`); a late, lost or duplicated tick is harmless because each slot runs
once, by the database's constraints (see :mod:`scheduler.runs`). New batches are announced
through the ``publish`` callable given in.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from functools import cached_property

from qocr.models.store import Store
from qocr.s3 import make_s3_client
from qocr.scheduler.locks import schedule_locks
from qocr.scheduler.runs import RunReport, ScheduleRunner
from qocr.scheduler.schedules import ScheduleBook, ScheduleConfigError, load_schedule_book
from qocr.scheduler.sources import SourceExpander
from qocr.settings import Settings

log = logging.getLogger(__name__)

# publish(batch_id): send a new batch's first items to the workers now.
PublishBatch = Callable[[int], None]


def make_runner(
    store: Store, settings: Settings, publish: PublishBatch | None = None
) -> ScheduleRunner:
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


class ScheduleTick:
    """What one process needs to run ticks: its settings, a store, and how to publish."""

    def __init__(self, settings: Settings, store: Store, publish: PublishBatch | None) -> None:
        self.settings = settings
        self.store = store
        self._publish = publish

    @cached_property
    def runner(self) -> ScheduleRunner:
        return make_runner(self.store, self.settings, self._publish)

    def run(self) -> dict[str, int]:
        """One tick; returns how many schedules, runs and new batches it saw."""
        try:
            book = load_schedule_book(self.settings.config, self.settings)
        except ScheduleConfigError as exc:
            # Beat validated this file at start; a worker without it (or with a broken
            # edit) must say so loudly, once per tick, without failing the task forever.
            log.error("schedule tick skipped: %s", exc.message)
            return {"schedules": 0, "runs": 0, "batches": 0}
        return summarize(book, self.runner.tick(book))
