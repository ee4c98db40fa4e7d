"""Leases on received messages: a worker killed with messages in hand strands none of them.

The broker (kombu on Redis) gives a dead worker's unacked messages back only after its
visibility timeout, 15 minutes; the SQL lease of a claimed item covers only items that
started. In between lie the messages a worker has received but not started (prefetched,
or waiting for a pool slot at start-up). The worker's main process leases their items
as their messages arrive (Celery's ``task_received``), and renews those leases while
they wait; if the worker dies, the dispatcher's reaper finds the lease expired and
dispatches the item again within a lease (a late copy from the broker is harmless: the
claim lets only one run).

The lease is written by a thread of its own, a burst of messages in one statement: the
signal runs in Celery's consumer loop, which a database round trip per message slowed
(bench/overhead.py). A worker killed in the milliseconds between a message's arrival and
its lease leaves that message to the dispatcher's sweep for lost messages.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable
from datetime import timedelta
from typing import Any

from qocr.models.base import utcnow
from qocr.models.store import Store
from qocr.worker.queues import ITEM_TASK

log = logging.getLogger(__name__)

# How long the leasing thread gathers receipts before it writes their leases.
GATHER_SECONDS = 0.05


def _celery_requests() -> list[Any]:
    from celery.worker import state

    for _ in range(3):
        try:  # the consumer thread adds and removes requests meanwhile
            return list(state.requests.values())
        except RuntimeError:
            continue
    return []


class ReceivedLeases:
    """Leases the items of the messages this worker holds, until they start.

    Held means held by Celery (``celery.worker.state.requests``: received, reserved,
    waiting for a slot or a countdown, or running). A message the worker let go of (acked
    after a task that could not even claim its item) stops being renewed, so its item comes
    back within a lease instead of waiting for the broker.
    """

    def __init__(
        self,
        store: Store,
        lease: timedelta,
        renewals_per_lease: int,
        held: Callable[[], Iterable[Any]] = _celery_requests,
    ) -> None:
        self._store = store
        self._lease = lease
        self._interval_seconds = lease.total_seconds() / renewals_per_lease
        self._held = held
        self._pending: set[int] = set()
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="qocr-received", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()

    def received(self, item_id: int) -> None:
        """Have the item leased at once, by the leasing thread."""
        with self._lock:
            self._pending.add(item_id)
        self._wake.set()

    def lease_received(self) -> int:
        """Lease the items received since the last call; returns how many were leased."""
        with self._lock:
            item_ids, self._pending = sorted(self._pending), set()
        if not item_ids:
            return 0
        try:
            return len(self._store.hold_received(item_ids, utcnow() + self._lease))
        except Exception:  # the database is away: the broker's timeout still covers them
            log.warning("could not lease %d received items", len(item_ids), exc_info=True)
            return 0

    def on_task_received(self, request: Any = None, **_: Any) -> None:
        """Celery's ``task_received`` signal, in the worker's main process."""
        item_id = _item_id(request)
        if item_id is not None:
            self.received(item_id)

    def renew(self) -> int:
        """Renew the leases of every item whose message this worker still holds."""
        item_ids = sorted({i for r in self._held() if (i := _item_id(r)) is not None})
        if not item_ids:
            return 0
        return len(self._store.hold_received(item_ids, utcnow() + self._lease))

    def _run(self) -> None:
        next_renewal = time.monotonic() + self._interval_seconds
        while not self._stop.is_set():
            if self._wake.wait(max(0.0, next_renewal - time.monotonic())):
                # Messages come in bursts (prefetch): a moment's wait leases a burst at once.
                self._stop.wait(GATHER_SECONDS)
            self._wake.clear()  # before taking the pending ids: a later one wakes it again
            if self._stop.is_set():
                return
            self.lease_received()
            if time.monotonic() < next_renewal:
                continue
            next_renewal = time.monotonic() + self._interval_seconds
            try:
                self.renew()
            except Exception:
                log.warning("could not renew received leases", exc_info=True)


def _item_id(request: Any) -> int | None:
    if request is None or getattr(request, "task_name", None) != ITEM_TASK:
        return None
    args: Any = getattr(request, "args", None)
    try:
        return int(args[0])
    except (IndexError, TypeError, ValueError):
        return None
