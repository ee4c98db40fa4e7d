"""The fleet's dispatcher lock in Redis: one publisher at a time, however many processes.

The running dispatcher of a ``qocr worker`` renews it every tick; a one-shot publish
(``qocr submit``, a scheduled run) takes it for one top-up and gives it back. The lock
expires on its own, so a holder that dies blocks nobody for long.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

LOCK_KEY = "qocr:dispatcher:lock"
LOCK_TTL_MS = 15_000

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


class FleetLock:
    """The lock under one identity: taken, renewed and released only by that identity."""

    def __init__(self, redis_client: Any, ttl_ms: int = LOCK_TTL_MS) -> None:
        self.redis = redis_client
        self.identity = uuid.uuid4().hex
        self.ttl_ms = ttl_ms
        self._renew = redis_client.register_script(_RENEW)
        self._release = redis_client.register_script(_RELEASE)

    def acquire(self) -> bool:
        """Renew the lock if it is ours, take it if it is free; False if another holds it."""
        if self._renew(keys=[LOCK_KEY], args=[self.identity, self.ttl_ms]):
            return True
        return bool(self.redis.set(LOCK_KEY, self.identity, nx=True, px=self.ttl_ms))

    def release(self) -> None:
        """Give the lock back if it is still ours."""
        self._release(keys=[LOCK_KEY], args=[self.identity])

    @contextmanager
    def held(self) -> Iterator[bool]:
        """Hold the lock for one block; yields whether it was taken."""
        taken = self.acquire()
        try:
            yield taken
        finally:
            if taken:
                self.release()
