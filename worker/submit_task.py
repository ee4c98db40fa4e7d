"""``qocr.submit``: a batch submitted by a producer that reaches only the broker.

    app.send_task("qocr.submit", queue="qocr.control",
                  kwargs={"sources": [...], "options": {...}, "idempotency_key": "..."})

The task is thin: :func:`scheduler.remote_submit.accept` checks the input and makes the
batch exactly as ``qocr submit`` would, or records the rejection under the key. Without an
``idempotency_key`` the message's task id is the key (``celery:<task id>``), so a message
the broker delivers twice still makes one batch. Message shape: docs/producers.md.
"""

from __future__ import annotations

from typing import Any

from celery import Celery

from qocr.scheduler.remote_submit import accept
from qocr.worker.limits import LIMITS
from qocr.worker.process_state import ProcessState
from qocr.worker.queues import SUBMIT_TASK

TASK_ID_KEY_PREFIX = "celery:"


def register_submit_task(app: Celery, state: ProcessState) -> None:
    """Add ``qocr.submit`` to ``app`` (only to it: not shared)."""

    @app.task(  # type: ignore[untyped-decorator]
        name=SUBMIT_TASK,
        bind=True,
        shared=False,
        ignore_result=True,
        # Listing a large S3 prefix takes minutes, as a schedule tick does.
        soft_time_limit=LIMITS.tick_soft_time_limit_seconds,
        time_limit=LIMITS.tick_hard_time_limit_seconds,
    )
    def submit(
        task: Any,
        sources: Any = None,
        options: Any = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        from sqlalchemy.exc import DBAPIError

        key = idempotency_key or f"{TASK_ID_KEY_PREFIX}{task.request.id}"
        store = state.submit_store()
        try:
            outcome = accept(
                store,
                state.settings,
                key,
                sources,
                options,
                publish=lambda _batch_id: state.publish(store),
            )
        except DBAPIError as exc:
            # The database is away: the message comes back later (never dropped), for as
            # long as it takes; the idempotency key keeps a late copy from doubling it.
            delay = min(LIMITS.db_retry_cap_seconds, 2 ** min(task.request.retries, 5))
            raise task.retry(countdown=delay, max_retries=None) from exc
        return outcome.as_dict()
