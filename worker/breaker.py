"""A fleet-wide circuit breaker: when the provider is down, pause and probe, don't burn attempts.

Without it, every item spends its attempts against an outage on its own schedule, and a
few minutes of 5xx fail items for good. The breaker counts the fleet's recent calls per
model (in Redis for a fleet, in memory for ``qocr run``): when most of them failed with a
server error or a broken connection, it opens. While open, one call at a time goes through
as a probe (one per open interval, fleet-wide); every other item waits without a call and
without losing an attempt. A probe that succeeds closes the breaker for everyone; one that
fails keeps it open for twice as long, up to :data:`MAX_OPEN_SECONDS`, so the fleet is
back at full rate within that long of the provider's recovery.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from enum import StrEnum
from typing import Any, Protocol

log = logging.getLogger(__name__)

BUCKET_SECONDS = 10
BUCKETS = 3  # the window: the last 20 to 30 seconds of calls
MIN_CALLS = 5  # fewer calls than this say nothing about the provider
FAILURE_RATIO = 0.5
FIRST_OPEN_SECONDS = 5.0
MAX_OPEN_SECONDS = 20.0


class CallOutcome(StrEnum):
    """What a call says about the provider's health."""

    OK = "ok"  # an answer, even an error about this item: the service is up
    FAILED = "failed"  # a 5xx, a timeout or a broken connection
    NEUTRAL = "neutral"  # a 429: the throttle's business, not the breaker's


class KeyValue(Protocol):
    """The few atomic key operations the breaker needs (Redis has them all)."""

    def incr(self, key: str, ttl_seconds: float) -> int: ...

    def get(self, key: str) -> str | None: ...

    def put(self, key: str, value: str, ttl_seconds: float, only_if_absent: bool = False) -> bool:
        """Set ``key``; with ``only_if_absent``, only when it does not exist (True if set)."""
        ...

    def delete(self, *keys: str) -> None: ...


class CircuitBreaker:
    """``before_call`` asks whether a call may go; ``record`` reports how it went."""

    def __init__(
        self, kv: KeyValue, clock: Callable[[], float] = time.time, prefix: str = "qocr:breaker:"
    ) -> None:
        self._kv = kv
        self._clock = clock
        self._prefix = prefix

    def before_call(self, model: str) -> float:
        """0 when a call may go now (closed, or this call is the probe); else seconds to wait."""
        opened_until = self._kv.get(self._key(model, "open"))
        if opened_until is None:
            return 0.0
        interval = float(self._kv.get(self._key(model, "interval")) or FIRST_OPEN_SECONDS)
        if self._kv.put(self._key(model, "probe"), "1", interval, only_if_absent=True):
            return 0.0
        return max(0.5, float(opened_until) - self._clock())

    def record(self, model: str, outcome: CallOutcome) -> None:
        if outcome is CallOutcome.NEUTRAL:
            return
        now = self._clock()
        bucket = int(now // BUCKET_SECONDS)
        ttl = BUCKET_SECONDS * (BUCKETS + 1)
        self._kv.incr(self._key(model, f"calls:{bucket}"), ttl)
        is_open = self._kv.get(self._key(model, "open")) is not None
        if outcome is CallOutcome.OK:
            if is_open:
                self._kv.delete(*(self._key(model, k) for k in ("open", "interval", "probe")))
                self._forget_window(model, bucket)
                log.warning("provider answers again: circuit for %s closed", model)
            return
        self._kv.incr(self._key(model, f"failed:{bucket}"), ttl)
        if is_open:
            self._reopen(model, now)
        elif self._window_failing(model, bucket):
            self._open(model, now, FIRST_OPEN_SECONDS)
            log.error(
                "most calls to %s fail (server errors, broken connections): circuit open, "
                "probing every %.0f-%.0f s",
                model,
                FIRST_OPEN_SECONDS,
                MAX_OPEN_SECONDS,
            )

    def is_open(self, model: str) -> bool:
        return self._kv.get(self._key(model, "open")) is not None

    def _window_failing(self, model: str, bucket: int) -> bool:
        calls = failed = 0
        for past in range(bucket - BUCKETS + 1, bucket + 1):
            calls += int(self._kv.get(self._key(model, f"calls:{past}")) or 0)
            failed += int(self._kv.get(self._key(model, f"failed:{past}")) or 0)
        return calls >= MIN_CALLS and failed >= FAILURE_RATIO * calls

    def _forget_window(self, model: str, bucket: int) -> None:
        # A fresh start after recovery: the outage's failures must not reopen it at once.
        self._kv.delete(
            *(
                self._key(model, f"{kind}:{past}")
                for past in range(bucket - BUCKETS + 1, bucket + 1)
                for kind in ("calls", "failed")
            )
        )

    def _open(self, model: str, now: float, interval: float) -> None:
        lifetime = interval + MAX_OPEN_SECONDS * 4  # outlives every probe interval
        self._kv.put(self._key(model, "interval"), str(interval), lifetime)
        self._kv.put(self._key(model, "open"), str(now + interval), lifetime)

    def _reopen(self, model: str, now: float) -> None:
        interval = float(self._kv.get(self._key(model, "interval")) or FIRST_OPEN_SECONDS)
        self._open(model, now, min(MAX_OPEN_SECONDS, interval * 2))

    def _key(self, model: str, name: str) -> str:
        return f"{self._prefix}{model}:{name}"


class MemoryKeyValue:
    """:class:`KeyValue` in this process, for ``qocr run`` and tests."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._values: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def _live(self, key: str) -> str | None:
        entry = self._values.get(key)
        if entry is None or entry[1] <= self._clock():
            self._values.pop(key, None)
            return None
        return entry[0]

    def incr(self, key: str, ttl_seconds: float) -> int:
        with self._lock:
            value = int(self._live(key) or 0) + 1
            self._values[key] = (str(value), self._clock() + ttl_seconds)
            return value

    def get(self, key: str) -> str | None:
        with self._lock:
            return self._live(key)

    def put(self, key: str, value: str, ttl_seconds: float, only_if_absent: bool = False) -> bool:
        with self._lock:
            if only_if_absent and self._live(key) is not None:
                return False
            self._values[key] = (value, self._clock() + ttl_seconds)
            return True

    def delete(self, *keys: str) -> None:
        with self._lock:
            for key in keys:
                self._values.pop(key, None)


class RedisKeyValue:
    """:class:`KeyValue` in Redis, shared by every worker of the fleet."""

    def __init__(self, client: Any) -> None:
        self._client = client

    def incr(self, key: str, ttl_seconds: float) -> int:
        pipe = self._client.pipeline()
        pipe.incr(key)
        pipe.pexpire(key, int(ttl_seconds * 1000))
        value, _ = pipe.execute()
        return int(value)

    def get(self, key: str) -> str | None:
        value = self._client.get(key)
        return None if value is None else value.decode() if isinstance(value, bytes) else value

    def put(self, key: str, value: str, ttl_seconds: float, only_if_absent: bool = False) -> bool:
        done = self._client.set(key, value, px=max(1, int(ttl_seconds * 1000)), nx=only_if_absent)
        return bool(done)

    def delete(self, *keys: str) -> None:
        if keys:
            self._client.delete(*keys)
