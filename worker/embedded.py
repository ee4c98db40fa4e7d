"""``qocr run``: one batch processed in this process, no broker, on the worker's code path.

Items are picked from SQL exactly as the dispatcher picks them and handed to a thread pool
instead of Redis; each thread runs :meth:`ItemProcessor.process` (same claim, throttle,
retry and persistence as a Celery worker).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from datetime import timedelta

from qocr.models.base import utcnow
from qocr.models.states import ItemState
from qocr.worker.limits import LIMITS
from qocr.worker.process import ItemProcessor, Outcome

log = logging.getLogger(__name__)

IDLE_POLL_SECONDS = 0.5
REAP_EVERY_SECONDS = 5.0
PROGRESS_SECONDS = 0.5

Progress = Callable[[dict[ItemState, int]], None]


def run_batch(
    processor: ItemProcessor,
    batch_id: int,
    concurrency: int,
    on_progress: Progress | None = None,
) -> dict[ItemState, int]:
    """Process every item of ``batch_id``; returns the final counts by state."""
    store = processor.rt.store
    # Items this batch left dispatched by an earlier, interrupted run are ours to take again.
    store.reset_dispatched(batch_id)
    in_flight: set[Future[Outcome]] = set()
    last_reap = last_progress = 0.0
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="qocr-item") as pool:
        while True:
            if time.monotonic() - last_reap > REAP_EVERY_SECONDS:
                lost_after = timedelta(seconds=LIMITS.embedded_lost_message_seconds)
                store.reap(utcnow(), lost_after=lost_after)
                last_reap = time.monotonic()
            room = 2 * concurrency - len(in_flight)
            for item_id in store.pick_for_dispatch(room, batch_id=batch_id):
                in_flight.add(pool.submit(processor.process, item_id))
            if not in_flight:
                if not store.batch_is_open(batch_id):
                    break
                time.sleep(IDLE_POLL_SECONDS)  # retries waiting for their time
                continue
            done, in_flight = _wait_some(in_flight)
            for future in done:
                if future.exception() is not None:
                    log.error("item failed unexpectedly: %s", future.exception())
            if on_progress is not None and time.monotonic() - last_progress > PROGRESS_SECONDS:
                on_progress(store.counts_by_state(batch_id))
                last_progress = time.monotonic()
    store.complete_finished_batches()
    counts = store.counts_by_state(batch_id)
    if on_progress is not None:
        on_progress(counts)
    return counts


def _wait_some(
    futures: set[Future[Outcome]],
) -> tuple[set[Future[Outcome]], set[Future[Outcome]]]:
    done, pending = wait(futures, timeout=IDLE_POLL_SECONDS, return_when=FIRST_COMPLETED)
    return set(done), set(pending)
