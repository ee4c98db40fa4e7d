"""Rate limits enforced per second, as the real service may do (digest: "RPM/60").

A :class:`SlidingWindow` admits at most ``capacity`` units in any window of ``window_s``
seconds (a sliding log, not fixed buckets: no burst of 2x at a bucket edge). Time is passed
in, so the limits are pure and testable without sleeping.

* Requests: ``rpm`` becomes ``max(1, rpm // 60)`` requests per ``capacity * 60 / rpm``
  seconds; for multiples of 60 that is exactly RPM/60 requests in any one-second window.
* Tokens: likewise ``tpm`` tokens per minute as TPM/60 tokens per (about) one second. A
  request reserves its input tokens when admitted and adds its output tokens on success; a
  failed request gives its reservation back. A single request larger than the whole window is
  admitted only when the window is empty (otherwise it could never pass).
"""

from __future__ import annotations

import contextlib
from collections import deque
from dataclasses import dataclass


@dataclass
class Admission:
    """One admitted request's share of a window; ``amount`` can grow (output tokens)."""

    at: float
    amount: int


class SlidingWindow:
    """At most ``capacity`` units admitted within any ``window_s``-second window."""

    def __init__(self, capacity: int, window_s: float) -> None:
        if capacity < 1 or window_s <= 0:
            raise ValueError("capacity must be >= 1 and window_s > 0")
        self.capacity = capacity
        self.window_s = window_s
        self._entries: deque[Admission] = deque()

    @classmethod
    def per_minute(cls, per_minute: int) -> SlidingWindow:
        """The per-second form of a per-minute limit (see the module docstring)."""
        capacity = max(1, per_minute // 60)
        return cls(capacity, capacity * 60.0 / per_minute)

    def used(self, now: float) -> int:
        """Units admitted in the window ending at ``now``."""
        self._expire(now)
        return sum(entry.amount for entry in self._entries)

    def try_admit(self, now: float, amount: int = 1) -> Admission | None:
        """Admit ``amount`` units at ``now``, or None when that would exceed the capacity."""
        used = self.used(now)
        if used + amount > self.capacity and used > 0:
            return None
        admission = Admission(now, amount)
        self._entries.append(admission)
        return admission

    def release(self, admission: Admission) -> None:
        """Give an admission back (the request failed); unknown admissions are ignored."""
        with contextlib.suppress(ValueError):
            self._entries.remove(admission)

    def clear(self) -> None:
        self._entries.clear()

    def _expire(self, now: float) -> None:
        # Kept: admissions strictly inside (now - window, now]; so any half-open window of
        # window_s seconds holds at most `capacity` units.
        horizon = now - self.window_s
        while self._entries and self._entries[0].at <= horizon:
            self._entries.popleft()


class RateLimits:
    """The request and token windows of one emulator, one pair per model (as Alibaba counts
    per account and model); either limit may be absent (unlimited)."""

    def __init__(self, rpm: int | None, tpm: int | None) -> None:
        self.rpm = rpm
        self.tpm = tpm
        self._requests: dict[str, SlidingWindow] = {}
        self._tokens: dict[str, SlidingWindow] = {}

    def admit_request(self, model: str, now: float) -> bool:
        if self.rpm is None:
            return True
        window = self._requests.setdefault(model, SlidingWindow.per_minute(self.rpm))
        return window.try_admit(now) is not None

    def reserve_tokens(self, model: str, now: float, amount: int) -> Admission | None:
        """Reserve input tokens; None when the token window is full. Unlimited: a dummy."""
        if self.tpm is None:
            return Admission(now, amount)
        window = self._tokens.setdefault(model, SlidingWindow.per_minute(self.tpm))
        return window.try_admit(now, amount)

    def settle_tokens(self, admission: Admission, extra: int) -> None:
        """The request succeeded: its output tokens count in the window too."""
        admission.amount += extra

    def release_tokens(self, model: str, admission: Admission) -> None:
        window = self._tokens.get(model)
        if window is not None:
            window.release(admission)

    def clear(self) -> None:
        self._requests.clear()
        self._tokens.clear()
