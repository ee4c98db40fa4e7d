"""The Celery app: configuration for never-lose, never-double processing, and the one task.

Settings follow what Celery on Redis does under crashes (see ../shared/docs/celery-redis.md):
late acks and reject-on-worker-lost so a killed child's message comes back, one message
reserved per slot, no result backend, no ETA/countdown (back-off lives in SQL), broker
reconnects forever. The SQL lease, not the broker, is what guarantees recovery and
exactly-once results.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery, signals

from qocr.logs import configure_logging
from qocr.scheduler.beat import register_schedule_tasks
from qocr.settings import Settings, get_settings

log = logging.getLogger(__name__)

QUEUE = "qocr"
# Items that ran before (retries, a dead worker's items) and schedule ticks get their own
# queues, read in turn with the main one: never behind minutes of item messages.
RETRY_QUEUE = "qocr.retry"
CONTROL_QUEUE = "qocr.control"
TASK_NAME = "qocr.process_item"
# A task is at most a throttle wait plus a few bounded calls; the hard limit stays far
# below the visibility timeout so a running task is never redelivered while it runs.
SOFT_TIME_LIMIT = 270
HARD_TIME_LIMIT = 300
VISIBILITY_TIMEOUT = 900
# A database restart: retry the message a little later, bounded (the reaper covers the rest).
DB_RETRY_CAP_SECONDS = 30
DB_RETRIES = 20


def celery_config(settings: Settings) -> dict[str, Any]:
    transport = {"visibility_timeout": VISIBILITY_TIMEOUT}
    return {
        "broker_url": settings.broker_url,
        "broker_transport_options": transport,
        "visibility_timeout": VISIBILITY_TIMEOUT,
        "result_backend": None,
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_default_queue": QUEUE,
        "task_routes": {"qocr.schedule_tick": {"queue": CONTROL_QUEUE}},
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_soft_time_limit": SOFT_TIME_LIMIT,
        "task_time_limit": HARD_TIME_LIMIT,
        "worker_disable_rate_limits": True,
        "worker_eta_task_limit": 100,
        "worker_max_tasks_per_child": 10_000,
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
        "task_send_sent_event": False,
        "broker_pool_limit": 10,
    }


def create_app(settings: Settings | None = None) -> Celery:
    settings = settings or get_settings()
    app = Celery("qocr", set_as_current=False)
    app.conf.update(celery_config(settings))
    _register_tasks(app)
    register_schedule_tasks(app)
    return app


def _register_tasks(app: Celery) -> None:
    @app.task(name=TASK_NAME, ignore_result=True, bind=True)  # type: ignore[untyped-decorator]
    def process_item(task: Any, item_id: int) -> str:
        from sqlalchemy.exc import DBAPIError

        from qocr.worker.process_state import processor

        try:
            return processor().process(int(item_id)).value
        except DBAPIError as exc:
            if not exc.connection_invalidated and not _is_disconnect(exc):
                raise
            # The database is away (a restart): keep the message alive with a short retry
            # rather than waiting for the reaper's lost-message timeout.
            delay = min(DB_RETRY_CAP_SECONDS, 2 ** min(task.request.retries, 5))
            raise task.retry(countdown=delay, max_retries=DB_RETRIES) from exc


def _is_disconnect(exc: Exception) -> bool:
    from sqlalchemy.exc import InterfaceError, OperationalError

    return isinstance(exc, OperationalError | InterfaceError)


_app: Celery | None = None


def get_app() -> Celery:
    """This process's app, made once from the process settings."""
    global _app
    if _app is None:
        _app = create_app()
    return _app


def __getattr__(name: str) -> Any:
    # `qocr.worker.app.app` for `celery -A qocr.worker.app` users, made on first use, not at import.
    if name == "app":
        return get_app()
    raise AttributeError(name)


@signals.setup_logging.connect  # type: ignore[untyped-decorator]
def _setup_logging(**_: Any) -> None:
    settings = get_settings()
    configure_logging(
        settings.log_level, settings.api_key.get_secret_value() if settings.api_key else None
    )
