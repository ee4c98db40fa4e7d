"""Celery glue for schedules: the tick task the workers run, and `qocr beat`, which sends it.

Beat keeps no schedule state of its own (an in-memory scheduler, no shelve file): it only
sends ``qocr.schedule_tick`` every ``tick_seconds``. Any worker runs the tick
(:class:`scheduler.tick.ScheduleTick`), which materializes due slots; a late, lost or
duplicated tick is harmless because each slot runs once, by the database's constraints.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from qocr.worker.limits import LIMITS
from qocr.worker.process_state import ProcessState
from qocr.worker.queues import TICK_TASK

BEAT_ENTRY = "qocr-schedule-tick"
# A tick still queued after this is dropped; a newer one is behind it anyway.
TICK_EXPIRES_SECONDS = 600


def register_tick_task(app: Celery, state: ProcessState) -> None:
    """Add the tick task to ``app`` (only to it: not shared); it runs with ``state``'s settings."""

    @app.task(  # type: ignore[untyped-decorator]
        name=TICK_TASK,
        shared=False,
        ignore_result=True,
        soft_time_limit=LIMITS.tick_soft_time_limit_seconds,
        time_limit=LIMITS.tick_hard_time_limit_seconds,
    )
    def schedule_tick() -> dict[str, int]:
        return state.schedule_tick().run()


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
