"""A submit that came through the broker: checked and made exactly like ``qocr submit``,
and never dropped in silence.

A producer with a Celery client and no database credentials sends ``qocr.submit``
(docs/producers.md); a worker runs :func:`accept`. The batch is made by the same code as
``qocr submit`` (:func:`scheduler.idempotency.submit_once`), under the producer's
idempotency key, so a message delivered twice still makes one batch. Anything that stops
the submit (bad input, a key reused for another request, a source that cannot be read) is
recorded as a rejection under that key, which the producer can look up
(``qocr status --key KEY``, ``Client.get_by_key``). Celery stays in ``worker/``: publishing
is a callable given in.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from qocr.errors import QocrError
from qocr.models.store import Store
from qocr.models.submissions import Rejection, Submissions
from qocr.redact import redact_text
from qocr.scheduler.idempotency import request_sha256, submit_once
from qocr.scheduler.requests import RequestError, request_from_options
from qocr.settings import Settings

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RemoteSubmit:
    """What became of one ``qocr.submit`` message."""

    idempotency_key: str
    batch_id: int | None = None
    items: int = 0
    existing: bool = False
    rejection: Rejection | None = None

    def as_dict(self) -> dict[str, Any]:
        rejected = self.rejection
        return {
            "idempotency_key": self.idempotency_key,
            "batch_id": self.batch_id,
            "items": self.items,
            "existing": self.existing,
            "rejected": None
            if rejected is None
            else {"code": rejected.code, "message": rejected.message},
        }


def accept(
    store: Store,
    settings: Settings,
    key: str,
    sources: Any,
    options: Any,
    publish: Callable[[int], None],
) -> RemoteSubmit:
    """Make the batch ``sources`` and ``options`` ask for under ``key``, or record why not.

    Errors of the database itself propagate: the caller retries the message later.
    """
    digest = None
    try:
        if options is None:
            options = {}
        if not isinstance(options, Mapping):
            raise RequestError("options must be a JSON object")
        request = request_from_options(settings, sources, options, local_sources=False)
        digest = request_sha256(request)
        submitted = submit_once(store, request, settings, key)
    except QocrError as exc:
        return _reject(store, key, digest, exc.code, exc.message, settings)
    except Exception as exc:
        from sqlalchemy.exc import DBAPIError

        if isinstance(exc, DBAPIError):
            raise
        log.exception("submit with key %s failed unexpectedly", key)
        message = f"unexpected {type(exc).__name__} (see the worker's log)"
        return _reject(store, key, digest, "submit_failed", message, settings)
    if not submitted.existing:
        try:
            publish(submitted.batch_id)
        except Exception as exc:  # the batch is safe in SQL; a dispatcher sends it later
            log.warning(
                "batch %s saved but not dispatched yet (%s)",
                submitted.batch_id,
                type(exc).__name__,
            )
    log.info(
        "submit with key %s: batch %s (%d items%s)",
        key,
        submitted.batch_id,
        submitted.items,
        ", existing" if submitted.existing else "",
    )
    return RemoteSubmit(key, submitted.batch_id, submitted.items, submitted.existing)


def _reject(
    store: Store, key: str, digest: str | None, code: str, message: str, settings: Settings
) -> RemoteSubmit:
    secret = settings.api_key.get_secret_value() if settings.api_key else None
    message = redact_text(message, secret)
    rejection = Submissions(store.engine).record_rejection(key, digest, code, message)
    log.warning("submit with key %s rejected: %s: %s", key, code, message)
    return RemoteSubmit(rejection.idempotency_key, rejection=rejection)
