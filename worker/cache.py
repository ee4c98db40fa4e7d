"""The result cache: an image read before with the same request is not paid for again.

Before an item's call (its image loaded, before the throttle and before the call is
counted), :meth:`ResultCache.before_call` looks for a paid result of the same image key and
request fingerprint (:mod:`models.result_cache`). A hit ends the item at once: a result row
that copies the paid one with ``cached_from`` and zero billed tokens, and an attempt
``cached`` that made no call. No throttle slot, no provider call.

A miss takes a short "in flight" marker for the key (``SET NX`` with a TTL: Redis for a
fleet, memory for ``qocr run``), so the same image twice in a batch costs one call: an item
that finds the marker taken goes back to the queue for a few seconds, without an attempt
counted (like the throttle's no-slot path), and finds the result when it comes back. The
marker's TTL is short and a thread renews it while the holder lives, so a holder that dies
(SIGKILL) holds its copies back for seconds, not for the longest a claim's calls can take.
When the holder's try ends without a saved result, the marker is dropped; after a saved
result it stays a minute as "saved": an item that missed the result just before it was
saved cannot take the marker then, and looks again later instead of paying a second time
(so a miss needs one lookup, not a second one under the marker).

Image keys: the sha256 of the bytes read. A URL source has no bytes here (the provider
fetches it), so it is cached only when the batch opted in (``--cache-urls``), keyed by the
exact URL and the ``ETag``/``Last-Modified`` a HEAD returns, when it answers.
"""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from enum import StrEnum

import httpx

from qocr.models.base import utcnow
from qocr.models.records import AttemptRecord, ClaimedItem
from qocr.models.result_cache import PaidResult, ResultCacheQueries
from qocr.models.states import AttemptOutcome
from qocr.models.store import Store
from qocr.scheduler.cache_policy import CachePolicy
from qocr.worker import metrics
from qocr.worker.breaker import KeyValue

log = logging.getLogger(__name__)

IN_FLIGHT_PREFIX = "qocr:cache:inflight:"
# An item whose key is being paid for comes back after about this long (jittered, so a
# crowd of copies does not return in one burst).
RECHECK_SECONDS = 2.0
# An in-flight marker lives this long unless renewed; its holder renews it every third.
MARKER_TTL_SECONDS = 15.0
# How long a marker says "saved" after its holder saved the result: far longer than the
# moment between an item's lookup and its try for the marker.
SAVED_MARK_SECONDS = 60.0
SAVED = "saved"
HEAD_TIMEOUT_SECONDS = 5.0
URL_SCHEMES = ("http://", "https://")

Head = Callable[[str], str]


class Verdict(StrEnum):
    """What the cache decided for an item; all but ``CALL`` end this try of it.

    The values are the item processor's outcomes of the same name.
    """

    CALL = "call"  # call the provider (the key's marker is held while it runs, if any)
    SUCCEEDED = "succeeded"  # a paid result was reused: the item is done
    RETRY_LATER = "retry_later"  # the key is being paid for by another item: wait
    LEASE_LOST = "lease_lost"


@dataclass
class Lookup:
    """The verdict, and the key a paid result of this item is stored under (None: none).

    On ``CALL``, the caller sets ``saved`` once the paid result is in the database.
    """

    verdict: Verdict
    image_key: str | None
    saved: bool = False


class ResultCache:
    """Looks paid results up before a call and keeps copies from paying twice at once."""

    def __init__(
        self,
        store: Store,
        kv: KeyValue,
        worker_name: str,
        in_flight_seconds: float,
        head: Head | None = None,
    ) -> None:
        self._store = store
        self._queries = ResultCacheQueries(store.engine)
        self._kv = kv
        self._worker_name = worker_name
        self._in_flight_seconds = in_flight_seconds
        self._head = head
        self._http: httpx.Client | None = None
        self._held: dict[str, str] = {}  # marker → token, renewed while held
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    @contextmanager
    def before_call(
        self, item: ClaimedItem, sha256: str | None, policy: CachePolicy, fingerprint: str
    ) -> Iterator[Lookup]:
        """The item's verdict for a request of this ``fingerprint`` under its batch's
        ``policy``; the body of the ``with`` makes the call on ``CALL``."""
        key = self.image_key(item.source, policy, sha256)
        if key is None or not policy.enabled:
            yield Lookup(Verdict.CALL, key)
            return
        paid = self._find(key, fingerprint, policy)
        if paid is not None:
            yield Lookup(self._reuse(item, paid, key, fingerprint), key)
            return
        marker = f"{IN_FLIGHT_PREFIX}{key}:{fingerprint}"
        token = uuid.uuid4().hex
        after_saved = False
        if not self._kv.put(marker, token, self._in_flight_seconds, only_if_absent=True):
            after_saved = self._kv.swap(marker, SAVED, token, self._in_flight_seconds)
            if not after_saved:  # being paid for right now: look again later
                yield Lookup(self._wait(item), key)
                return
        self._hold(marker, token)
        lookup = Lookup(Verdict.CALL, key)
        try:
            if after_saved:
                # A result was saved a moment ago, after this item's lookup: look again (it
                # may not suit this batch, e.g. a max age of seconds: then call).
                paid = self._find(key, fingerprint, policy)
                if paid is not None:
                    lookup = Lookup(self._reuse(item, paid, key, fingerprint), key, saved=True)
            yield lookup
        finally:
            with self._lock:
                self._held.pop(marker, None)
            # Only our own marker (not a successor's, after a TTL ran out).
            if lookup.saved:
                self._kv.swap(marker, token, SAVED, SAVED_MARK_SECONDS)
            else:
                self._kv.swap(marker, token, None, 0)

    def _hold(self, marker: str, token: str) -> None:
        with self._lock:
            self._held[marker] = token
            if self._renewer is None or not self._renewer.is_alive():
                self._stop.clear()
                self._renewer = threading.Thread(
                    target=self._renew, name="qocr-cache-markers", daemon=True
                )
                self._renewer.start()

    def _renew(self) -> None:
        while not self._stop.wait(self._in_flight_seconds / 3):
            with self._lock:
                held = dict(self._held)
            for marker, token in held.items():
                try:
                    if self._kv.get(marker) == token:
                        self._kv.put(marker, token, self._in_flight_seconds)
                except Exception:  # Redis away: the marker lapses, a copy may pay; no harm
                    log.warning("could not renew cache marker", exc_info=True)

    def image_key(self, source: str, policy: CachePolicy, sha256: str | None) -> str | None:
        """What the item's answer is cached under: its image's sha256, or for a URL read
        with ``--cache-urls``, a sha256 of the URL and its validators; else None."""
        if sha256 is not None:
            return sha256
        if policy.enabled and policy.urls and source.startswith(URL_SCHEMES):
            return url_key(source, self._validators(source))
        return None

    def close(self) -> None:
        self._stop.set()
        if self._http is not None:
            self._http.close()
            self._http = None

    def _find(self, key: str, fingerprint: str, policy: CachePolicy) -> PaidResult | None:
        max_age = policy.max_age_seconds
        not_before = None if max_age is None else utcnow() - timedelta(seconds=max_age)
        return self._queries.find_paid(key, fingerprint, not_before)

    def _reuse(self, item: ClaimedItem, paid: PaidResult, key: str, fingerprint: str) -> Verdict:
        now = utcnow()
        attempt = AttemptRecord(
            started_at=now,
            ended_at=now,
            outcome=AttemptOutcome.CACHED,
            worker=self._worker_name,
            called=False,
        )
        if not self._store.succeed(item, attempt, paid.reused(key, fingerprint)):
            return Verdict.LEASE_LOST
        metrics.record_finished("succeeded")
        return Verdict.SUCCEEDED

    def _wait(self, item: ClaimedItem) -> Verdict:
        delay = RECHECK_SECONDS * random.uniform(0.75, 1.25)
        if self._store.release(item, utcnow() + timedelta(seconds=delay)):
            return Verdict.RETRY_LATER
        return Verdict.LEASE_LOST

    def _validators(self, url: str) -> str:
        if self._head is not None:
            return self._head(url)
        if self._http is None:
            self._http = httpx.Client(timeout=HEAD_TIMEOUT_SECONDS, follow_redirects=True)
        return head_validators(self._http, url)


def head_validators(http: httpx.Client, url: str) -> str:
    """The ``ETag`` and ``Last-Modified`` a HEAD of ``url`` answers, as one string; "" when
    it does not answer (the URL alone is the key then)."""
    try:
        response = http.head(url)
    except httpx.HTTPError as exc:
        # Never the URL itself in a log: it may carry a signature.
        log.info("HEAD for a URL source failed (%s); keyed by URL alone", type(exc).__name__)
        return ""
    if not response.is_success:
        return ""
    etag = response.headers.get("ETag", "")
    modified = response.headers.get("Last-Modified", "")
    return f"etag={etag}\nlast-modified={modified}" if etag or modified else ""


def url_key(url: str, validators: str) -> str:
    """The image key of a URL source: the exact URL and its validators, hashed."""
    return hashlib.sha256(f"url\n{url}\n{validators}".encode()).hexdigest()
