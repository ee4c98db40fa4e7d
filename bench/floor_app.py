"""The floors of the overhead benchmark, on qocr's broker settings.

The app takes qocr's own Celery configuration (``worker.app.celery_config``: late acks,
reject on worker lost, prefetch 1, no result backend...) so the only difference from a qocr
worker is the task body. Two tasks, each recording its completion time in a Redis list:

* ``bench.noop`` (queue ``bench_floor``): nothing else; Celery's own cost per message;
* ``bench.call`` (queue ``bench_call``): the one thing every item must do besides Celery,
  one Qwen-OCR call of a local image through qocr's client (read, prepare, request, parse),
  to ``BENCH_CALL_BASE_URL`` (the emulator); no SQL, throttle, cache or lease. No pipeline
  that makes a call per item can go faster than this one on the same machine.

    BENCH_FLOOR_BROKER=redis://127.0.0.1:6379/11 \\
        python -m celery -A floor_app worker --pool threads -c 16 -Q bench_floor
"""

from __future__ import annotations

import json
import os
import threading
import time
from pathlib import Path

import redis
from celery import Celery

from qocr.qwen.client import QwenOCRClient
from qocr.qwen.images import prepare_image
from qocr.qwen.options import RecognizeOptions
from qocr.settings import load_settings
from qocr.worker.app import celery_config

QUEUE = "bench_floor"
CALL_QUEUE = "bench_call"
TASK_NAME = "bench.noop"
CALL_TASK_NAME = "bench.call"
DONE_KEY = "bench:floor:done"
BROKER = os.environ.get("BENCH_FLOOR_BROKER", "redis://127.0.0.1:6379/11")
MODEL = "qwen-vl-ocr-latest"

app = Celery("bench_floor", set_as_current=False)
app.conf.update(celery_config(load_settings(broker_url=BROKER)))
app.conf.task_default_queue = QUEUE
_done = redis.Redis.from_url(BROKER)
_client: QwenOCRClient | None = None
_client_lock = threading.Lock()


@app.task(name=TASK_NAME, ignore_result=True)  # type: ignore[untyped-decorator]
def noop(item_id: int) -> None:
    """Count one completion (one RPUSH), nothing else."""
    _done.rpush(DONE_KEY, repr(time.time()))


def _shared_client() -> QwenOCRClient:
    """One pooled client per process, built as the worker's runtime builds its own."""
    global _client
    with _client_lock:
        if _client is None:
            settings = load_settings(
                broker_url=BROKER,
                base_url=os.environ["BENCH_CALL_BASE_URL"],
                api_key=os.environ["BENCH_CALL_API_KEY"],
            )
            _client = QwenOCRClient(
                api_key=settings.require_api_key(),
                region=settings.region,
                base_url=settings.base_url,
                api="compatible",
                timeout=settings.request_timeout,
                deadline_seconds=settings.call_deadline_seconds,
                max_connections=64,
            )
        return _client


@app.task(name=CALL_TASK_NAME, ignore_result=True)  # type: ignore[untyped-decorator]
def call(path: str) -> None:
    """One Qwen-OCR call of the image at ``path``, then count the completion."""
    image = prepare_image(Path(path).read_bytes())
    _shared_client().recognize_with(image, RecognizeOptions(model=MODEL))
    _done.rpush(DONE_KEY, repr(time.time()))


def publish(count: int) -> None:
    """Publish ``count`` messages on one reused producer, as qocr's dispatcher does."""
    with app.producer_or_acquire() as producer:
        for item_id in range(count):
            noop.apply_async(args=[item_id], producer=producer, queue=QUEUE)


def publish_calls(paths_file: str) -> None:
    """Publish one call message for each image path of a JSON list in ``paths_file``."""
    paths: list[str] = json.loads(Path(paths_file).read_text())
    with app.producer_or_acquire() as producer:
        for path in paths:
            call.apply_async(args=[path], producer=producer, queue=CALL_QUEUE)
