"""``qocr worker``: a Celery worker whose main process also runs the dispatcher."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import redis
from celery import Celery, signals

from qocr.models.db import make_engine
from qocr.models.store import Store
from qocr.qwen.catalog import model_spec
from qocr.scheduler.dispatch import Dispatcher, DispatchService, Publish, window_for
from qocr.settings import Settings
from qocr.worker.app import CONTROL_QUEUE, QUEUE, RETRY_QUEUE, TASK_NAME

log = logging.getLogger(__name__)


def celery_publisher(app: Celery) -> Publish:
    """Publish item ids on one reused producer connection."""
    task = app.tasks[TASK_NAME]

    def publish(item_ids: Sequence[int], retry: bool) -> None:
        queue = RETRY_QUEUE if retry else QUEUE
        with app.producer_or_acquire() as producer:
            for item_id in item_ids:
                task.apply_async(args=[item_id], producer=producer, queue=queue)

    return publish


def make_dispatcher(app: Celery, settings: Settings, store: Store) -> Dispatcher:
    rpm = settings.rpm or model_spec(settings.model).rpm
    return Dispatcher(
        store,
        celery_publisher(app),
        window=window_for(rpm),
        redis_client=redis.Redis.from_url(settings.broker_url),
    )


def run_worker(
    app: Celery, settings: Settings, concurrency: int, pool: str, dispatch: bool = True
) -> None:
    """Start the worker in this process; returns when it shuts down."""
    services: list[DispatchService] = []

    def start_dispatch(**_: Any) -> None:
        store = Store(make_engine(settings.database_url))
        service = DispatchService(
            make_dispatcher(app, settings, store), redis.Redis.from_url(settings.broker_url)
        )
        service.start()
        services.append(service)
        log.info("dispatcher started (window %d)", service.dispatcher.window)

    def stop_dispatch(**_: Any) -> None:
        for service in services:
            service.stop()

    if dispatch:
        signals.worker_ready.connect(start_dispatch, weak=False)
        signals.worker_shutdown.connect(stop_dispatch, weak=False)
    argv = [
        "worker",
        f"--concurrency={concurrency}",
        f"--pool={pool}",
        f"--queues={QUEUE},{RETRY_QUEUE},{CONTROL_QUEUE}",
        "--loglevel=" + settings.log_level,
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    app.worker_main(argv=argv)
