"""Dispatch: keep a bounded window of items in the broker, and recover what was lost.

Items live in SQL; only ``window`` of them are in Redis (or running) at a time, so a
million-item batch costs the broker a few MB. Each tick also returns the items of dead
workers (expired leases), re-dispatches messages the broker lost, closes finished batches
and starts their completion webhooks (:mod:`scheduler.notify`). One dispatcher is active
per fleet (:mod:`scheduler.fleet_lock`), and one-shot publishes (:func:`top_up_once`) take
the same lock; the claim in SQL makes a duplicate message harmless anyway. Publishing
itself is a callable given in (the worker's Celery publisher), so nothing here knows the
broker's client library.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from qocr.models.base import utcnow
from qocr.models.records import ReapReport
from qocr.models.store import Store
from qocr.scheduler.fleet_lock import FleetLock
from qocr.scheduler.notify import Notifier

log = logging.getLogger(__name__)

TICK_SECONDS = 1.0
# Present while the broker keeps its data; gone after a restart without persistence.
EPOCH_KEY = "qocr:broker:epoch"

# publish(item_ids, retry): retries (items that ran before) go to their own queue, which
# workers read in turn with the main one, so they do not wait behind a full window.
Publish = Callable[[Sequence[int], bool], None]


def window_for(rpm: int, capacity_seconds: float) -> int:
    """``capacity_seconds`` of API capacity, within [50, 5000] messages."""
    return max(50, min(5000, int(rpm * capacity_seconds / 60)))


@dataclass(frozen=True)
class TickReport:
    published: int
    expired_leases: int
    lost_messages: int
    completed_batches: int
    broker_reset: int


class Dispatcher:
    """One tick of dispatch and recovery; the loop and the lock are :class:`DispatchService`'s."""

    def __init__(
        self,
        store: Store,
        publish: Publish,
        window: int,
        *,
        lost_after: timedelta,
        redis_client: Any | None = None,
        reap_grace: timedelta = timedelta(0),
        notifier: Notifier | None = None,
        broker_backlog: Callable[[], int] | None = None,
        idle_lost_after: timedelta | None = None,
        batch_mode: Callable[[], object] | None = None,
    ) -> None:
        """``lost_after``: a message not claimed this long after dispatch is taken as lost.

        ``reap_grace``: after a tick failed (the database or the broker was away), how long
        live workers get to renew the leases they could not renew meanwhile before any
        lease counts as expired; without it, every item in flight during an outage would
        be taken from its living worker and called again.

        ``notifier``: the completion webhooks, queued and started at the end of each tick.
        """
        self.store = store
        self.publish = publish
        self.window = window
        self.lost_after = lost_after
        self.redis = redis_client
        self.reap_grace = reap_grace
        # How many messages wait in the broker's queues; 0 lets the reaper take a message
        # not received after ``idle_lost_after`` as lost (it is in no queue).
        self.broker_backlog = broker_backlog
        self.idle_lost_after = idle_lost_after
        self._reap_resumes_at = 0.0
        self.notifier = notifier
        # Batch mode's step (scheduler/batch_mode.py): shards planned, handed out, polled.
        self.batch_mode = batch_mode

    def _idle_lost_after(self) -> timedelta | None:
        if self.broker_backlog is None or self.idle_lost_after is None:
            return None
        return self.idle_lost_after if self.broker_backlog() == 0 else None

    def tick_failed(self) -> None:
        """A tick could not finish: hold the reaper back for the grace period."""
        self._reap_resumes_at = time.monotonic() + self.reap_grace.total_seconds()

    def tick(self) -> TickReport:
        broker_reset = self._check_broker_epoch()
        if time.monotonic() < self._reap_resumes_at:
            reaped = ReapReport(expired_leases=0, lost_messages=0)
        else:
            reaped = self.store.reap(utcnow(), self.lost_after, self._idle_lost_after())
        if reaped.expired_leases:
            log.warning("%d items had expired leases (dead worker?)", reaped.expired_leases)
        completed = self.store.complete_finished_batches()
        published = self.top_up()
        if self.batch_mode is not None:
            self.batch_mode()
        self._notify()
        return TickReport(
            published=published,
            expired_leases=reaped.expired_leases,
            lost_messages=reaped.lost_messages,
            completed_batches=len(completed),
            broker_reset=broker_reset,
        )

    def _notify(self) -> None:
        if self.notifier is None:
            return
        try:
            self.notifier.tick()
        except Exception:
            # Webhooks wait in SQL; a failure here must not hold dispatch or the reaper back.
            log.warning("webhook tick failed", exc_info=True)

    def close(self) -> None:
        if self.notifier is not None:
            self.notifier.close()

    def top_up(self) -> int:
        """Publish due items until the window is full; returns how many were published."""
        self._check_broker_epoch()
        room = self.window - self.store.in_flight_count()
        retries = self.store.pick_for_dispatch(room, retries_only=True)
        self._publish(retries, retry=True)
        fresh = self.store.pick_for_dispatch(room - len(retries))
        self._publish(fresh, retry=False)
        return len(retries) + len(fresh)

    def _publish(self, item_ids: Sequence[int], retry: bool) -> None:
        if not item_ids:
            return
        try:
            self.publish(item_ids, retry)
        except Exception:
            # Not published means not dispatched: the next tick tries again.
            self.store.unmark_dispatched(item_ids)
            raise

    def _check_broker_epoch(self) -> int:
        """When the broker lost its data, every dispatched message is gone: dispatch again."""
        if self.redis is None:
            return 0
        if self.redis.set(EPOCH_KEY, uuid.uuid4().hex, nx=True):
            reset = self.store.reset_dispatched()
            if reset:
                log.warning("broker has no epoch (restarted?): %d items dispatched again", reset)
            return reset
        return 0


def top_up_once(dispatcher: Dispatcher, lock: FleetLock) -> int | None:
    """Top up now under the fleet's lock; None when a running dispatcher holds it.

    That dispatcher tops up within a second, so the caller's items are not left behind.
    """
    with lock.held() as taken:
        if not taken:
            return None
        return dispatcher.top_up()


class DispatchService:
    """Runs :meth:`Dispatcher.tick` every second in a thread while holding the fleet's lock."""

    def __init__(self, dispatcher: Dispatcher, lock: FleetLock) -> None:
        self.dispatcher = dispatcher
        self.lock = lock
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="qocr-dispatch", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._thread.join(timeout)
        self.dispatcher.close()
        try:
            self.lock.release()
        except Exception:
            log.debug("could not release the dispatcher lock", exc_info=True)

    def holds_lock(self) -> bool:
        return self.lock.acquire()

    def _run(self) -> None:
        while not self._stop.wait(TICK_SECONDS):
            try:
                if self.holds_lock():
                    self.dispatcher.tick()
            except Exception:
                # Redis or the database is away: keep trying; nothing is lost meanwhile.
                log.warning("dispatch tick failed", exc_info=True)
                self.dispatcher.tick_failed()
