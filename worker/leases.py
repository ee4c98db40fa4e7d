"""Keep the leases of in-flight items alive while their worker lives.

A lease is short (``QOCR_LEASE_SECONDS``), so a killed worker's items come back within a
minute; a live worker renews its leases from a background thread, so a long call (a big
document streams for minutes) never loses its item to the reaper.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

from qocr.models.base import utcnow
from qocr.models.records import ClaimedItem
from qocr.models.store import Store

log = logging.getLogger(__name__)

RETRY_SECONDS = 1.0


class LeaseKeeper:
    """Renews every held lease ``renewals_per_lease`` times per lease, in one UPDATE each."""

    def __init__(self, store: Store, lease: timedelta, renewals_per_lease: int) -> None:
        self._store = store
        self._lease = lease
        self._renewals_per_lease = renewals_per_lease
        self._held: dict[int, str] = {}
        self._kept: dict[int, str] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def lease_until(self) -> datetime:
        return utcnow() + self._lease

    @contextmanager
    def holding(self, item: ClaimedItem) -> Iterator[None]:
        self._ensure_running()
        with self._lock:
            self._held[item.item_id] = item.lease_token
        try:
            yield
        finally:
            with self._lock:
                self._held.pop(item.item_id, None)

    def keep_holding(self, item: ClaimedItem) -> None:
        """Hold ``item`` past its task (its paid result waits to be saved) until
        :meth:`stop_holding`."""
        self._ensure_running()
        with self._lock:
            self._kept[item.item_id] = item.lease_token

    def stop_holding(self, item_id: int) -> None:
        with self._lock:
            self._kept.pop(item_id, None)

    def _ensure_running(self) -> None:
        # Started on first use, in the process that runs tasks (after a prefork fork).
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name="qocr-leases", daemon=True)
            self._thread.start()

    def _run(self) -> None:
        interval = self._lease.total_seconds() / self._renewals_per_lease
        wait = interval
        while not self._stop.wait(wait):
            with self._lock:
                held = {**self._kept, **self._held}
            wait = interval
            if not held:
                continue
            try:
                self._store.renew_leases(held, utcnow() + self._lease)
            except Exception:
                # The database is away: try again every second, so the leases are renewed
                # as soon as it answers, before the dispatcher's grace after an outage ends.
                log.warning("could not renew %d leases", len(held), exc_info=True)
                wait = min(interval, RETRY_SECONDS)

    def stop(self) -> None:
        self._stop.set()
