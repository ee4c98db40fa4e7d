"""The one ItemProcessor of this worker process, made on first use and again after a fork."""

from __future__ import annotations

import threading
from typing import Any

from celery import signals

from qocr.settings import get_settings
from qocr.worker.process import ItemProcessor
from qocr.worker.runtime import Runtime

_lock = threading.Lock()
_processor: ItemProcessor | None = None


def processor() -> ItemProcessor:
    global _processor
    with _lock:
        if _processor is None:
            _processor = ItemProcessor(Runtime(get_settings()))
        return _processor


@signals.worker_process_init.connect  # type: ignore[untyped-decorator]
def _after_fork(**_: Any) -> None:
    # A prefork child must not reuse the parent's sockets (database pool, HTTP, Redis).
    global _processor
    if _processor is not None:
        _processor.rt.after_fork()
    _processor = None


@signals.worker_process_shutdown.connect  # type: ignore[untyped-decorator]
def _on_shutdown(**_: Any) -> None:
    if _processor is not None:
        _processor.rt.close()
