"""Completion webhooks: find ended batches, queue one delivery per end, send it until a 2xx.

The dispatcher's tick (one per fleet, :mod:`scheduler.dispatch`) calls :meth:`Notifier.tick`,
which is quick and never waits on a receiver: it queues a delivery row for every batch
with a ``notify_url`` that ended since it last looked (the row freezes the batch's
``status --json`` document as the body), then claims due rows under a lease and hands them
to a few sender threads. A sender POSTs the body signed (:mod:`scheduler.webhook_signature`),
and records the answer while its lease still holds the row: 2xx ends the delivery, anything
else is tried again with back-off for up to a day.

Exactly one successful delivery per batch end: the row is UNIQUE per end; a claim is a
conditional UPDATE, so two senders never hold one row; a sender killed mid-request leaves
its lease to run out, and the row is then sent again. The receiver can therefore see the
same ``X-Qocr-Delivery`` twice in one case only: the sender died after the receiver
answered 2xx and before the row was marked (receivers dedupe on that header).

``qocr run`` (no dispatcher) calls :meth:`Notifier.deliver_now` once its batch has ended.
"""

from __future__ import annotations

import json
import logging
import random
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import Engine

from qocr.errors import QocrError
from qocr.models.base import utcnow
from qocr.models.batch_documents import batch_document, shown_url
from qocr.models.reports import Reports
from qocr.models.webhooks import ClaimedDelivery, DeliveryState, EndedBatch, WebhookStore
from qocr.pricing import PriceTable, price_table
from qocr.scheduler.webhook_signature import (
    ATTEMPT_HEADER,
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    event_name,
    signature,
)
from qocr.settings import Settings
from qocr.version import __version__

log = logging.getLogger(__name__)

# A send gives up on a receiver after these; the lease outlasts a send with room to spare,
# so a live sender never loses its row to another.
CONNECT_TIMEOUT_SECONDS = 5.0
READ_TIMEOUT_SECONDS = 10.0
LEASE_SECONDS = 60.0
# Back-off between attempts: 10 s, 20 s, 40 s ... at most an hour, for up to a day.
FIRST_RETRY_SECONDS = 10.0
MAX_RETRY_SECONDS = 3600.0
RETRY_HORIZON = timedelta(days=1)
# Ends older than this when first seen (every worker down for a week) are not announced.
LOOK_BACK = timedelta(days=7)
SENDERS = 4
UNSIGNED = "QOCR_WEBHOOK_SECRET is not set on the sending worker: not sent"


def retry_delay_seconds(attempts: int, jitter: float = 0.2) -> float:
    """The wait after failed attempt number ``attempts`` (1-based), jittered by ±``jitter``."""
    base = min(FIRST_RETRY_SECONDS * 2 ** max(attempts - 1, 0), MAX_RETRY_SECONDS)
    return float(base * (1 + random.uniform(-jitter, jitter)))


def next_attempt(created_at: datetime, attempts: int, now: datetime) -> tuple[datetime, bool]:
    """When to try again after a failure, and whether to give up instead.

    The last try is made at the horizon itself, so a receiver back within the day gets it.
    """
    horizon = created_at + RETRY_HORIZON
    if now >= horizon:
        return now, True
    return min(now + timedelta(seconds=retry_delay_seconds(attempts)), horizon), False


class Notifier:
    """Queues and sends the completion webhooks of one database."""

    def __init__(
        self,
        engine: Engine,
        *,
        secret: str | None,
        prices: Callable[[], PriceTable],
        api_secret: str | None = None,
        transport: httpx.BaseTransport | None = None,
        senders: int = SENDERS,
    ) -> None:
        self.webhooks = WebhookStore(engine)
        self.reports = Reports(engine)
        self._secret = secret
        self._prices = prices
        self._api_secret = api_secret  # masked in the bodies' error texts
        self._transport = transport
        self._senders = senders
        self._lock = threading.Lock()
        self._client: httpx.Client | None = None
        self._pool: ThreadPoolExecutor | None = None
        self._in_flight: set[Future[bool]] = set()

    @classmethod
    def from_settings(cls, settings: Settings, engine: Engine) -> Notifier:
        def prices() -> PriceTable:
            try:
                return price_table(settings.region, config_file=Path(settings.config))
            except QocrError as exc:  # a broken [prices] table must not hold webhooks back
                log.warning("webhook bodies priced from the catalog: %s", exc.message)
                return price_table(settings.region)

        secret = settings.webhook_secret
        api_key = settings.api_key
        return cls(
            engine,
            secret=secret.get_secret_value() if secret else None,
            prices=prices,
            api_secret=api_key.get_secret_value() if api_key else None,
        )

    # -- the dispatcher's tick ------------------------------------------------------------

    def tick(self) -> int:
        """Queue new ends, and start sending what is due; returns how many sends started."""
        self.enqueue_ended()
        with self._lock:
            self._in_flight = {future for future in self._in_flight if not future.done()}
            room = self._senders - len(self._in_flight)
        claimed = self.webhooks.claim_due(room, self._lease_until())
        for delivery in claimed:
            future = self._executor().submit(self.send, delivery)
            with self._lock:
                self._in_flight.add(future)
        return len(claimed)

    def enqueue_ended(self) -> int:
        """A delivery row (with its body) for every end not queued yet; returns how many."""
        queued = 0
        for ended in self.webhooks.ended_without_delivery(utcnow() - LOOK_BACK):
            body = self._body(ended)
            if body is not None and self.webhooks.add(ended, body):
                queued += 1
                log.info(
                    "batch %s %s: webhook to %s queued",
                    ended.batch_id,
                    ended.state.value,
                    shown_url(ended.notify_url),
                )
        return queued

    def _body(self, ended: EndedBatch) -> str | None:
        document = batch_document(self.reports, ended.batch_id, self._prices(), self._api_secret)
        if document is None:  # deleted meanwhile
            return None
        return json.dumps(document, ensure_ascii=False, separators=(",", ":"))

    # -- one attempt ------------------------------------------------------------------

    def send(self, delivery: ClaimedDelivery) -> bool:
        """POST one claimed delivery and record the answer; True on a 2xx."""
        where = shown_url(delivery.url)
        if not self._secret:
            self._failed(delivery, None, UNSIGNED)
            log.error("webhook of batch %s to %s: %s", delivery.batch_id, where, UNSIGNED)
            return False
        body = delivery.body.encode("utf-8")
        headers = {
            "Content-Type": "application/json",
            "User-Agent": f"qocr/{__version__}",
            SIGNATURE_HEADER: signature(self._secret, body, int(time.time())),
            DELIVERY_HEADER: delivery.delivery_id,
            EVENT_HEADER: event_name(delivery.event),
            ATTEMPT_HEADER: str(delivery.attempts),
        }
        try:
            response = self._http().post(delivery.url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            # The type only: an exception's text may carry the URL, whose path is a secret.
            self._failed(delivery, None, f"{type(exc).__name__} (no answer)")
            log.warning(
                "webhook of batch %s to %s: %s (attempt %d)",
                delivery.batch_id,
                where,
                type(exc).__name__,
                delivery.attempts,
            )
            return False
        if 200 <= response.status_code < 300:
            if not self.webhooks.mark_delivered(delivery, response.status_code):
                log.warning("webhook %s: delivered, but its lease had passed on", delivery.id)
            log.info(
                "webhook of batch %s to %s delivered (HTTP %d, attempt %d)",
                delivery.batch_id,
                where,
                response.status_code,
                delivery.attempts,
            )
            return True
        reason = f"HTTP {response.status_code} {response.reason_phrase}".strip()
        self._failed(delivery, response.status_code, reason)
        log.warning(
            "webhook of batch %s to %s: %s (attempt %d)",
            delivery.batch_id,
            where,
            reason,
            delivery.attempts,
        )
        return False

    def _failed(self, delivery: ClaimedDelivery, status: int | None, error: str) -> None:
        at, give_up = next_attempt(delivery.created_at, delivery.attempts, utcnow())
        self.webhooks.mark_failed(delivery, status, error, at, give_up)
        if give_up:
            log.error("webhook of batch %s: given up after a day", delivery.batch_id)

    # -- without a dispatcher (qocr run) ----------------------------------------------

    def deliver_now(self, batch_id: int, within_seconds: float) -> DeliveryState | None:
        """Queue ``batch_id``'s end and send due deliveries here until it is delivered or
        ``within_seconds`` pass; a delivery still pending is left to any dispatcher."""
        deadline = time.monotonic() + within_seconds
        while True:
            self.enqueue_ended()
            for delivery in self.webhooks.claim_due(self._senders, self._lease_until()):
                self.send(delivery)
            states = [d.state for d in self.webhooks.for_batch(batch_id)]
            state = states[-1] if states else None
            if state != DeliveryState.PENDING or time.monotonic() >= deadline:
                return state
            time.sleep(min(1.0, max(deadline - time.monotonic(), 0.0)))

    # -- resources --------------------------------------------------------------------

    def _lease_until(self) -> datetime:
        return utcnow() + timedelta(seconds=LEASE_SECONDS)

    def _http(self) -> httpx.Client:
        with self._lock:
            if self._client is None:
                options: dict[str, Any] = {}
                if self._transport is not None:
                    options["transport"] = self._transport
                self._client = httpx.Client(
                    timeout=httpx.Timeout(READ_TIMEOUT_SECONDS, connect=CONNECT_TIMEOUT_SECONDS),
                    follow_redirects=False,
                    **options,
                )
            return self._client

    def _executor(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._pool is None:
                self._pool = ThreadPoolExecutor(self._senders, thread_name_prefix="qocr-webhook")
            return self._pool

    def close(self) -> None:
        with self._lock:
            pool, client = self._pool, self._client
            self._pool = self._client = None
        if pool is not None:
            pool.shutdown(wait=False, cancel_futures=True)
        if client is not None:
            client.close()
