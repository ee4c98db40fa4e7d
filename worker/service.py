"""``qocr worker``: a Celery worker whose main process also runs the dispatcher."""

from __future__ import annotations

import logging
from datetime import timedelta
from typing import Any

from celery import Celery, signals

from qocr.models.db import make_engine
from qocr.models.store import Store
from qocr.scheduler.dispatch import DispatchService
from qocr.scheduler.fleet_lock import FleetLock
from qocr.settings import Settings
from qocr.worker.limits import LIMITS
from qocr.worker.publish import make_dispatcher
from qocr.worker.queues import ALL_QUEUES
from qocr.worker.received import ReceivedLeases

log = logging.getLogger(__name__)


def run_worker(
    app: Celery, settings: Settings, concurrency: int, pool: str, dispatch: bool = True
) -> None:
    """Start the worker in this process; returns when it shuts down."""
    services: list[DispatchService] = []
    # Leased the moment their messages arrive, so a kill strands none (worker/received.py).
    received = ReceivedLeases(
        Store(make_engine(settings.database_url)),
        timedelta(seconds=settings.lease_seconds),
        renewals_per_lease=LIMITS.lease_renewals_per_lease,
    )
    received.start()
    signals.task_received.connect(received.on_task_received, weak=False)
    signals.worker_shutdown.connect(lambda **_: received.stop(), weak=False)

    def start_dispatch(**_: Any) -> None:
        store = Store(make_engine(settings.database_url))
        dispatcher = make_dispatcher(app, settings, store)
        service = DispatchService(dispatcher, FleetLock(dispatcher.redis))
        service.start()
        services.append(service)
        log.info("dispatcher started (window %d)", dispatcher.window)

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
        f"--queues={','.join(ALL_QUEUES)}",
        "--loglevel=" + settings.log_level,
        "--without-gossip",
        "--without-mingle",
        "--without-heartbeat",
    ]
    app.worker_main(argv=argv)
