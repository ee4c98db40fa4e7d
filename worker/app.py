"""The Celery app: configuration for never-lose, never-double processing, and both tasks.

Settings follow what Celery on Redis does under crashes (see ../shared/docs/celery-redis.md):
late acks and reject-on-worker-lost so a killed child's message comes back, one message
reserved per slot, no result backend, no ETA/countdown (back-off lives in SQL), broker
reconnects forever. The SQL lease, not the broker, is what guarantees recovery and
exactly-once results. Time limits and timeouts come from :mod:`worker.limits`.

The settings given to :func:`create_app` reach both tasks; only the ``celery -A
qocr.worker.app`` entry point (:func:`get_app`) reads them from the environment.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import Celery

from qocr.settings import Settings, get_settings
from qocr.worker.batch_tasks import register_shard_task
from qocr.worker.beat import register_tick_task
from qocr.worker.limits import LIMITS
from qocr.worker.process_state import ProcessState
from qocr.worker.queues import (
    CONTROL_QUEUE,
    ITEM_TASK,
    QUEUE,
    SHARD_TASK,
    SUBMIT_TASK,
    TICK_TASK,
)
from qocr.worker.submit_task import register_submit_task

log = logging.getLogger(__name__)


def celery_config(settings: Settings) -> dict[str, Any]:
    transport = {
        "visibility_timeout": LIMITS.visibility_timeout_seconds,
        "unacked_restore_interval": LIMITS.restore_interval_seconds,
        "unacked_restore_throttle": LIMITS.restore_scan_every,
    }
    return {
        "broker_url": settings.broker_url,
        "broker_transport_options": transport,
        "visibility_timeout": LIMITS.visibility_timeout_seconds,
        "result_backend": None,
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_default_queue": QUEUE,
        "task_routes": {
            TICK_TASK: {"queue": CONTROL_QUEUE},
            SUBMIT_TASK: {"queue": CONTROL_QUEUE},
            SHARD_TASK: {"queue": CONTROL_QUEUE},
        },
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_soft_time_limit": LIMITS.task_soft_time_limit_seconds,
        "task_time_limit": LIMITS.task_hard_time_limit_seconds,
        "worker_disable_rate_limits": True,
        "worker_eta_task_limit": 100,
        "worker_max_tasks_per_child": 10_000,
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        # A broker blip must not kill calls in flight (they would be paid again once their
        # lease ran out): a task that cannot ack is delivered again, and its claim finds
        # the item finished or running, so the copy does nothing.
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": False,
        "task_send_sent_event": False,
        "broker_pool_limit": 10,
    }


class QocrApp(Celery):  # type: ignore[misc]  # Celery ships no type information
    """The Celery app, owning what its tasks build in this process (``close()`` frees it)."""

    state: ProcessState | None = None

    def close(self) -> None:
        if self.state is not None:
            self.state.close()
        super().close()


def create_app(settings: Settings) -> QocrApp:
    """An app whose tasks run with ``settings``; ``with create_app(s) as app:`` cleans up."""
    app = QocrApp("qocr", set_as_current=False)
    app.conf.update(celery_config(settings))
    app.state = ProcessState(app, settings)
    _register_item_task(app, app.state)
    register_tick_task(app, app.state)
    register_submit_task(app, app.state)
    register_shard_task(app, app.state)
    return app


def _register_item_task(app: Celery, state: ProcessState) -> None:
    # shared=False: Celery would otherwise hand this closure (and its state) to every app
    # made later in the process, ahead of that app's own.
    @app.task(  # type: ignore[untyped-decorator]
        name=ITEM_TASK, ignore_result=True, bind=True, shared=False
    )
    def process_item(task: Any, item_id: int) -> str:
        from celery.exceptions import Reject
        from sqlalchemy.exc import DBAPIError

        for _ in range(2):
            try:
                return state.processor().process(int(item_id)).value
            except DBAPIError as exc:
                if not exc.connection_invalidated and not _is_disconnect(exc):
                    raise
                # The database is away (a restart): wait for it in this slot, then go on.
                # Not a countdown retry: an ETA message sits in worker memory and in
                # kombu's unacked set, and a backlog of them stalls a worker.
                log.warning("item %s: database away; waiting for it", item_id)
                if not state.wait_for_database(LIMITS.db_outage_wait_seconds):
                    break
        # Still away (or away again): the message goes back to the queue, not to an ETA.
        raise Reject("database unreachable", requeue=True)


def _is_disconnect(exc: Exception) -> bool:
    from sqlalchemy.exc import DataError, IntegrityError

    # A dead or half-dead connection shows as operational, interface, or even programming
    # errors ("can't change autocommit now"); only bad data is not worth a retry.
    return not isinstance(exc, IntegrityError | DataError)


_app: Celery | None = None


def get_app() -> Celery:
    """The app of the ``celery -A qocr.worker.app`` entry point, from the process settings."""
    global _app
    if _app is None:
        _app = create_app(get_settings())
    return _app


def __getattr__(name: str) -> Any:
    # `qocr.worker.app.app` for `celery -A qocr.worker.app` users, made on first use, not at import.
    if name == "app":
        return get_app()
    raise AttributeError(name)
