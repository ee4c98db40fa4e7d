"""The floor of the overhead benchmark: a bare Celery no-op task on qocr's broker settings.

The app takes qocr's own Celery configuration (``worker.app.celery_config``: late acks,
reject on worker lost, prefetch 1, no result backend...) so the only difference from a qocr
worker is the task body: here it records its completion time in a Redis list and returns.

    BENCH_FLOOR_BROKER=redis://127.0.0.1:6379/11 \\
        python -m celery -A floor_app worker --pool threads -c 16 -Q bench_floor
"""

from __future__ import annotations

import os
import time

import redis
from celery import Celery

from qocr.settings import load_settings
from qocr.worker.app import celery_config

QUEUE = "bench_floor"
TASK_NAME = "bench.noop"
DONE_KEY = "bench:floor:done"
BROKER = os.environ.get("BENCH_FLOOR_BROKER", "redis://127.0.0.1:6379/11")

app = Celery("bench_floor", set_as_current=False)
app.conf.update(celery_config(load_settings(broker_url=BROKER)))
app.conf.task_default_queue = QUEUE
_done = redis.Redis.from_url(BROKER)


@app.task(name=TASK_NAME, ignore_result=True)  # type: ignore[untyped-decorator]
def noop(item_id: int) -> None:
    """Count one completion (one RPUSH), nothing else."""
    _done.rpush(DONE_KEY, repr(time.time()))


def publish(count: int) -> None:
    """Publish ``count`` messages on one reused producer, as qocr's dispatcher does."""
    with app.producer_or_acquire() as producer:
        for item_id in range(count):
            noop.apply_async(args=[item_id], producer=producer, queue=QUEUE)
