"""``qocr.batch_shard``: a worker's turn on one shard of a batch-mode batch (control queue).

The task is thin: :class:`worker.batch_shard.ShardWorker` does the step the shard waits
for. A task that dies (a killed worker, a time limit) leaves the shard's lease to run out;
the dispatcher sends the shard again then (:mod:`scheduler.batch_mode`).
"""

from __future__ import annotations

from celery import Celery

from qocr.scheduler.batch_mode import batch_client
from qocr.worker.batch_shard import ShardWorker
from qocr.worker.limits import LIMITS
from qocr.worker.process_state import ProcessState
from qocr.worker.queues import SHARD_TASK


def register_shard_task(app: Celery, state: ProcessState) -> None:
    """Add ``qocr.batch_shard`` to ``app`` (only to it: not shared)."""

    @app.task(  # type: ignore[untyped-decorator]
        name=SHARD_TASK,
        shared=False,
        ignore_result=True,
        # Reading 50,000 images, or writing 50,000 results, takes minutes.
        soft_time_limit=LIMITS.tick_soft_time_limit_seconds,
        time_limit=LIMITS.tick_hard_time_limit_seconds,
    )
    def batch_shard(shard_id: int) -> str:
        runtime = state.processor().rt
        worker = ShardWorker(runtime, lambda: batch_client(state.settings))
        return worker.advance(int(shard_id))
