"""What one worker process builds from its app's settings, once, and again after a fork.

:func:`worker.app.create_app` makes one :class:`ProcessState` with the settings it was
given, and both tasks use it, so no task reads the environment again. Built on first use:
the item processor (runtime, store, HTTP clients, throttle) and the schedule tick.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from celery import Celery, signals

from qocr.logs import configure_logging
from qocr.models.db import make_engine
from qocr.models.store import Store
from qocr.scheduler.tick import ScheduleTick
from qocr.settings import Settings
from qocr.worker.process import ItemProcessor
from qocr.worker.publish import publish_now
from qocr.worker.runtime import Runtime


class ProcessState:
    """The item processor and the schedule tick of one app in this process."""

    def __init__(self, app: Celery, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self._lock = threading.Lock()
        self._processor: ItemProcessor | None = None
        self._tick: ScheduleTick | None = None
        self._submit_store: Store | None = None
        # Weak receivers: a state (and its app) that is gone stops listening.
        signals.setup_logging.connect(self._setup_logging)
        signals.worker_process_init.connect(self._after_fork)
        signals.worker_process_shutdown.connect(self._on_shutdown)

    def processor(self) -> ItemProcessor:
        with self._lock:
            if self._processor is None:
                self._processor = ItemProcessor(Runtime(self.settings))
            return self._processor

    def schedule_tick(self) -> ScheduleTick:
        with self._lock:
            if self._tick is None:
                store = Store(make_engine(self.settings.database_url))

                def publish(_batch_id: int) -> None:
                    publish_now(self.app, self.settings, store)

                self._tick = ScheduleTick(self.settings, store, publish)
            return self._tick

    def submit_store(self) -> Store:
        """The store of ``qocr.submit`` tasks (docs/producers.md)."""
        with self._lock:
            if self._submit_store is None:
                self._submit_store = Store(make_engine(self.settings.database_url))
            return self._submit_store

    def publish(self, store: Store) -> None:
        """Top the broker up now (a new batch's first items), under the fleet's lock."""
        publish_now(self.app, self.settings, store)

    def wait_for_database(self, timeout_seconds: float) -> bool:
        """Poll the database until it answers (True) or ``timeout_seconds`` pass (False)."""
        from sqlalchemy import text
        from sqlalchemy.exc import DBAPIError

        engine = self.processor().rt.store.engine
        deadline = time.monotonic() + timeout_seconds
        while True:
            try:
                with engine.connect() as conn:
                    conn.execute(text("SELECT 1"))
                return True
            except DBAPIError:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                time.sleep(min(1.0, remaining))

    def close(self) -> None:
        """Release connections and threads; the next task builds them again."""
        with self._lock:
            if self._processor is not None:
                self._processor.rt.close()
            if self._tick is not None:
                self._tick.store.engine.dispose()
            if self._submit_store is not None:
                self._submit_store.engine.dispose()
            self._processor = None
            self._tick = None
            self._submit_store = None

    def _setup_logging(self, **_: Any) -> None:
        secret = self.settings.api_key.get_secret_value() if self.settings.api_key else None
        configure_logging(self.settings.log_level, secret)

    def _after_fork(self, **_: Any) -> None:
        # A prefork child must not reuse the parent's sockets (database pool, HTTP, Redis).
        with self._lock:
            if self._processor is not None:
                self._processor.rt.after_fork()
            if self._submit_store is not None:
                self._submit_store.engine.dispose(close=False)
            self._processor = None
            self._tick = None
            self._submit_store = None

    def _on_shutdown(self, **_: Any) -> None:
        self.close()
