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
# While the circuit is closed, a reading of it is trusted this long, and successes are
# counted in this process this long before they join the fleet's window: a healthy call
# costs no Redis round trip for the breaker (bench/overhead.py). A circuit opened by another
# worker is seen within this; a success does not close it then, the probe's does.
LOCAL_SECONDS = 0.5
# KeyValue.swap in Redis. ARGV: expected, new value, TTL in ms, "1" to set / "0" to delete.
_SWAP_SCRIPT = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if ARGV[4] == '1' then redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
else redis.call('DEL', KEYS[1]) end
return 1
"""


class CallOutcome(StrEnum):
    """What a call says about the provider's health."""

    OK = "ok"  # an answer, even an error about this item: the service is up
    FAILED = "failed"  # a 5xx, a timeout or a broken connection
    NEUTRAL = "neutral"  # a 429: the throttle's business, not the breaker's


class KeyValue(Protocol):
    """The few atomic key operations the breaker needs (Redis has them all)."""

    def incr(self, key: str, ttl_seconds: float, amount: int = 1) -> int: ...

    def get(self, key: str) -> str | None: ...

    def put(self, key: str, value: str, ttl_seconds: float, only_if_absent: bool = False) -> bool:
        """Set ``key``; with ``only_if_absent``, only when it does not exist (True if set)."""
        ...

    def delete(self, *keys: str) -> None: ...

    def swap(self, key: str, expected: str, value: str | None, ttl_seconds: float) -> bool:
        """If ``key`` holds ``expected``: set it to ``value`` (None: delete it); True if so."""
        ...


class CircuitBreaker:
    """``before_call`` asks whether a call may go; ``record`` reports how it went."""

    def __init__(
        self, kv: KeyValue, clock: Callable[[], float] = time.time, prefix: str = "qocr:breaker:"
    ) -> None:
        self._kv = kv
        self._clock = clock
        self._prefix = prefix
        self._lock = threading.Lock()
        self._closed_seen: dict[str, float] = {}  # model → when it was last read closed
        self._successes: dict[tuple[str, int], int] = {}  # not yet in the fleet's window
        self._flushed_at = 0.0

    def before_call(self, model: str) -> float:
        """0 when a call may go now (closed, or this call is the probe); else seconds to wait."""
        if self._trusted_closed(model):
            return 0.0
        opened_until = self._kv.get(self._key(model, "open"))
        if opened_until is None:
            self._closed_seen[model] = time.monotonic()
            return 0.0
        self._closed_seen.pop(model, None)
        interval = float(self._kv.get(self._key(model, "interval")) or FIRST_OPEN_SECONDS)
        if self._kv.put(self._key(model, "probe"), "1", interval, only_if_absent=True):
            return 0.0
        return max(0.5, float(opened_until) - self._clock())

    def record(self, model: str, outcome: CallOutcome) -> None:
        if outcome is CallOutcome.NEUTRAL:
            return
        now = self._clock()
        bucket = int(now // BUCKET_SECONDS)
        if outcome is CallOutcome.OK and self._trusted_closed(model):
            self._count_success(model, bucket)
            return
        self._closed_seen.pop(model, None)
        self._flush_successes()  # the window below must hold this process's successes
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

    def _trusted_closed(self, model: str) -> bool:
        seen = self._closed_seen.get(model)
        return seen is not None and time.monotonic() - seen < LOCAL_SECONDS

    def _count_success(self, model: str, bucket: int) -> None:
        with self._lock:
            key = (model, bucket)
            self._successes[key] = self._successes.get(key, 0) + 1
            if time.monotonic() - self._flushed_at < LOCAL_SECONDS:
                return
        self._flush_successes()

    def _flush_successes(self) -> None:
        with self._lock:
            successes, self._successes = self._successes, {}
            self._flushed_at = time.monotonic()
        ttl = BUCKET_SECONDS * (BUCKETS + 1)
        for (model, bucket), count in successes.items():
            self._kv.incr(self._key(model, f"calls:{bucket}"), ttl, count)


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

    def incr(self, key: str, ttl_seconds: float, amount: int = 1) -> int:
        with self._lock:
            value = int(self._live(key) or 0) + amount
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

    def swap(self, key: str, expected: str, value: str | None, ttl_seconds: float) -> bool:
        with self._lock:
            if self._live(key) != expected:
                return False
            if value is None:
                self._values.pop(key, None)
            else:
                self._values[key] = (value, self._clock() + ttl_seconds)
            return True


class RedisKeyValue:
    """:class:`KeyValue` in Redis, shared by every worker of the fleet."""

    def __init__(self, client: Any) -> None:
        self._client = client
        self._swap = client.register_script(_SWAP_SCRIPT)

    def incr(self, key: str, ttl_seconds: float, amount: int = 1) -> int:
        pipe = self._client.pipeline()
        pipe.incr(key, amount)
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

    def swap(self, key: str, expected: str, value: str | None, ttl_seconds: float) -> bool:
        # One round trip, and atomic: a value set meanwhile by someone else is left alone.
        ttl_ms = max(1, int(ttl_seconds * 1000))
        done = self._swap(
            keys=[key], args=[expected, value or "", ttl_ms, "0" if value is None else "1"]
        )
        return bool(done)
