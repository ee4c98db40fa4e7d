"""One call's limits as its answer arrives: a total deadline and a byte allowance, sans I/O.

httpx's timeouts are per phase, and its read timeout is per read: a 200 whose body or
stream keeps trickling (a keep-alive comment, one byte a second) never trips it. A
:class:`CallBudget` is made when a call starts; the transport clamps every phase timeout to
what is left of the deadline (:meth:`CallBudget.timeout`) and reports every chunk it reads
(:meth:`CallBudget.take`), which raises once the deadline has passed or the answer has
grown past the cap.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping

import httpx

from qocr.qwen.errors import APITimeoutError, OptionsError, ResponseTooLargeError

DEFAULT_DEADLINE_SECONDS = 120.0
# A phase timeout is never clamped below this: httpx treats 0 as "fail at once".
_MIN_PHASE_SECONDS = 0.001


def check_limits(deadline_seconds: float, max_response_bytes: int) -> None:
    """Raise :class:`OptionsError` unless both limits are finite and positive."""
    if not (math.isfinite(deadline_seconds) and deadline_seconds > 0):
        raise OptionsError(f"deadline_seconds must be finite and positive, not {deadline_seconds}")
    if isinstance(max_response_bytes, bool) or max_response_bytes <= 0:
        raise OptionsError(f"max_response_bytes must be positive, not {max_response_bytes}")


class CallBudget:
    """The deadline and the byte allowance of one call, started at construction."""

    def __init__(
        self,
        deadline_seconds: float,
        max_bytes: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.deadline_seconds = deadline_seconds
        self.max_bytes = max_bytes
        self._clock = clock
        self.deadline_at = clock() + deadline_seconds
        self.received_bytes = 0

    def remaining(self) -> float:
        """Seconds left before the deadline (0 once it has passed)."""
        return max(self.deadline_at - self._clock(), 0.0)

    def expired(self) -> bool:
        return self._clock() >= self.deadline_at

    def timeout(self, timeout: httpx.Timeout) -> httpx.Timeout:
        """``timeout`` with every phase clamped to the time left."""
        left = max(self.remaining(), _MIN_PHASE_SECONDS)

        def clamp(seconds: float | None) -> float:
            return left if seconds is None else min(seconds, left)

        return httpx.Timeout(
            connect=clamp(timeout.connect),
            read=clamp(timeout.read),
            write=clamp(timeout.write),
            pool=clamp(timeout.pool),
        )

    def expect(self, headers: Mapping[str, str]) -> None:
        """Refuse at once an answer whose Content-Length is over the cap."""
        declared = headers.get("content-length", "")
        if declared.isdigit() and int(declared) > self.max_bytes:
            raise self.too_large(int(declared))

    def take(self, size: int) -> None:
        """Count ``size`` more bytes of the answer; raise past the cap or the deadline."""
        self.received_bytes += size
        if self.received_bytes > self.max_bytes:
            raise self.too_large(self.received_bytes)
        if self.expired():
            raise self.deadline_error()

    def too_large(self, size: int) -> ResponseTooLargeError:
        return ResponseTooLargeError(
            f"the answer is larger than the {self.max_bytes} bytes qocr reads "
            f"({size} bytes or more); it was not kept"
        )

    def deadline_error(self) -> APITimeoutError:
        return APITimeoutError(
            f"no complete answer within the call deadline of {self.deadline_seconds:g} s",
            code="deadline_exceeded",
        )
