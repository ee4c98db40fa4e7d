"""Sending items to the workers: the Celery publisher, and the one way to build a dispatcher.

Every publisher goes through :func:`make_dispatcher`: the worker's dispatch service,
``qocr submit``, ``qocr schedule run`` and the schedule tick. A one-shot publish
(:func:`publish_now`) takes the fleet's dispatcher lock like the service does, so the
window stays bounded however many processes publish.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import timedelta

import redis
from celery import Celery

from qocr.models.shard_store import ShardStore
from qocr.models.store import Store
from qocr.qwen.catalog import model_spec
from qocr.scheduler.batch_mode import BatchModeTick, PublishShard
from qocr.scheduler.dispatch import Dispatcher, Publish, top_up_once, window_for
from qocr.scheduler.fleet_lock import FleetLock
from qocr.scheduler.notify import Notifier
from qocr.settings import Settings
from qocr.worker.limits import LIMITS
from qocr.worker.queues import (
    CONTROL_QUEUE,
    ITEM_QUEUES,
    ITEM_TASK,
    QUEUE,
    RETRY_QUEUE,
    SHARD_TASK,
)

log = logging.getLogger(__name__)


def celery_publisher(app: Celery) -> Publish:
    """Publish item ids on one reused producer connection."""
    task = app.tasks[ITEM_TASK]

    def publish(item_ids: Sequence[int], retry: bool) -> None:
        queue = RETRY_QUEUE if retry else QUEUE
        with app.producer_or_acquire() as producer:
            for item_id in item_ids:
                task.apply_async(args=[item_id], producer=producer, queue=queue)

    return publish


def make_dispatcher(
    app: Celery,
    settings: Settings,
    store: Store,
    window_seconds: float = LIMITS.dispatch_window_seconds,
) -> Dispatcher:
    """The dispatcher over ``store`` that publishes through ``app`` (epoch in the broker),
    keeping ``window_seconds`` of API capacity in the broker."""
    rpm = settings.rpm or model_spec(settings.model).rpm
    broker = redis.Redis.from_url(settings.broker_url)
    return Dispatcher(
        store,
        celery_publisher(app),
        window=window_for(rpm, window_seconds),
        lost_after=timedelta(seconds=LIMITS.lost_message_seconds),
        redis_client=broker,
        # One lease renewal round, and a second to spare for a worker's first try after.
        broker_backlog=lambda: sum(int(broker.llen(queue)) for queue in ITEM_QUEUES),
        idle_lost_after=timedelta(seconds=LIMITS.idle_lost_message_seconds),
        reap_grace=timedelta(seconds=settings.lease_seconds / LIMITS.lease_renewals_per_lease + 2),
        # Only a running dispatcher's tick sends webhooks; a one-shot publish never ticks.
        notifier=Notifier.from_settings(settings, store.engine),
        batch_mode=BatchModeTick.from_settings(
            settings, ShardStore(store.engine), shard_publisher(app)
        ),
    )


def shard_publisher(app: Celery) -> PublishShard:
    """Send one shard of a batch-mode batch to a worker (scheduler/batch_mode.py)."""

    def publish(shard_id: int) -> None:
        app.send_task(SHARD_TASK, args=[shard_id], queue=CONTROL_QUEUE)

    return publish


def publish_now(app: Celery, settings: Settings, store: Store) -> int | None:
    """Top the broker up now, under the fleet's lock, with the first seconds of capacity
    (the dispatcher of any worker tops up the rest); None when a running dispatcher holds
    the lock (it publishes within a second)."""
    dispatcher = make_dispatcher(app, settings, store, LIMITS.publish_window_seconds)
    client = dispatcher.redis
    assert client is not None  # make_dispatcher always gives it the broker's Redis
    try:
        published = top_up_once(dispatcher, FleetLock(client))
    finally:
        client.close()
    if published is None:
        log.debug("a running dispatcher holds the lock; it publishes the new items")
    return published
