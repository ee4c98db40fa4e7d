"""Rate limits enforced as the service does: requests per second, requests and tokens per minute.

Three sliding windows per model (Alibaba counts per account and model), each stamped with
the moment the server decides on the request (its body read; for tokens, its images
loaded), so a window's times only grow and no window ever holds more than its capacity:

* **requests per second**: at most RPM/60 requests in any one second, no burst beyond it
  (``Throttling.BurstRate``). For limits that are not multiples of 60 the window holds
  ``capacity = max(1, rpm // 60)`` requests per ``capacity * 60 / rpm`` seconds, so the
  sustained rate is the per-minute figure;
* **requests per minute**: at most RPM in any sixty seconds (``Throttling.RateQuota``);
* **tokens per minute**: at most TPM tokens in any sixty seconds
  (``Throttling.AllocationQuota``). A request reserves its input tokens when it is read and
  adds its output tokens when it is answered; a failed request gives its reservation back. A
  request larger than the whole budget passes only when the window is empty.

A refused request takes nothing from any window. A :class:`SlidingWindow` is a sliding log,
not fixed buckets (no burst of 2x at a bucket edge); time is passed in, so the limits are
pure and testable without sleeping. :meth:`RateLimits.set_limits` changes the limits while
the emulator runs (``POST /_limits``): what was admitted stays counted.
"""

from __future__ import annotations

import bisect
import contextlib
from collections import deque
from dataclasses import dataclass
from enum import StrEnum

MINUTE_SECONDS = 60.0


class Throttled(StrEnum):
    """Which request window refused a request."""

    BURST_RATE = "burst_rate"  # more than RPM/60 in one second
    RATE_QUOTA = "rate_quota"  # more than RPM in one minute


@dataclass
class Admission:
    """One admitted request's share of a window; ``amount`` can grow (output tokens)."""

    at: float
    amount: int


class SlidingWindow:
    """At most ``capacity`` units admitted within any ``window_s``-second window."""

    def __init__(self, capacity: int, window_s: float) -> None:
        self._entries: deque[Admission] = deque()
        self.resize(capacity, window_s)

    @classmethod
    def per_second(cls, per_minute: int) -> SlidingWindow:
        """The per-second form of a per-minute limit (see the module docstring)."""
        capacity, window_s = per_second_shape(per_minute)
        return cls(capacity, window_s)

    def resize(self, capacity: int, window_s: float) -> None:
        """New bounds; what was admitted stays counted (a raised limit gives no burst)."""
        if capacity < 1 or window_s <= 0:
            raise ValueError("capacity must be >= 1 and window_s > 0")
        self.capacity = capacity
        self.window_s = window_s

    def used(self, now: float) -> int:
        """Units admitted in the window ending at ``now``."""
        self._expire(now)
        return sum(entry.amount for entry in self._entries)

    def fits(self, now: float, amount: int = 1) -> bool:
        """Whether ``amount`` more units may be admitted at ``now``."""
        used = self.used(now)
        return used == 0 or used + amount <= self.capacity

    def add(self, now: float, amount: int = 1) -> Admission:
        """Count ``amount`` units at ``now``, kept in time order. The server passes times that
        only grow (see the module docstring); an earlier time still lands in its place."""
        admission = Admission(now, amount)
        bisect.insort(self._entries, admission, key=lambda entry: entry.at)
        return admission

    def try_admit(self, now: float, amount: int = 1) -> Admission | None:
        """Admit ``amount`` units at ``now``, or None when that would exceed the capacity."""
        return self.add(now, amount) if self.fits(now, amount) else None

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


def per_second_shape(per_minute: int) -> tuple[int, float]:
    """(capacity, window seconds) of the per-second window of a per-minute limit."""
    capacity = max(1, per_minute // 60)
    return capacity, capacity * MINUTE_SECONDS / per_minute


@dataclass
class _RequestWindows:
    per_second: SlidingWindow
    per_minute: SlidingWindow


class RateLimits:
    """The request and token windows of one emulator, per model; either limit may be absent
    (unlimited)."""

    def __init__(self, rpm: int | None, tpm: int | None) -> None:
        self.rpm = rpm
        self.tpm = tpm
        self._requests: dict[str, _RequestWindows] = {}
        self._tokens: dict[str, SlidingWindow] = {}

    def admit_request(self, model: str, now: float) -> Throttled | None:
        """Count a request decided on at ``now``; the window that refuses it, if one does."""
        if self.rpm is None:
            return None
        windows = self._requests.get(model)
        if windows is None:
            windows = _RequestWindows(
                SlidingWindow.per_second(self.rpm), SlidingWindow(self.rpm, MINUTE_SECONDS)
            )
            self._requests[model] = windows
        if not windows.per_second.fits(now):
            return Throttled.BURST_RATE
        if not windows.per_minute.fits(now):
            return Throttled.RATE_QUOTA
        windows.per_second.add(now)
        windows.per_minute.add(now)
        return None

    def reserve_tokens(self, model: str, now: float, amount: int) -> Admission | None:
        """Reserve input tokens; None when the token window is full. Unlimited: a dummy."""
        if self.tpm is None:
            return Admission(now, amount)
        window = self._tokens.setdefault(model, SlidingWindow(self.tpm, MINUTE_SECONDS))
        return window.try_admit(now, amount)

    def settle_tokens(self, admission: Admission, extra: int) -> None:
        """The request succeeded: its output tokens count in the window too."""
        admission.amount += extra

    def release_tokens(self, model: str, admission: Admission) -> None:
        window = self._tokens.get(model)
        if window is not None:
            window.release(admission)

    def set_limits(self, rpm: int | None, tpm: int | None) -> None:
        """New limits from now on (None: unlimited); what was admitted stays counted."""
        if rpm is None:
            self._requests.clear()
        else:
            for windows in self._requests.values():
                windows.per_second.resize(*per_second_shape(rpm))
                windows.per_minute.resize(rpm, MINUTE_SECONDS)
        if tpm is None:
            self._tokens.clear()
        else:
            for window in self._tokens.values():
                window.resize(tpm, MINUTE_SECONDS)
        self.rpm, self.tpm = rpm, tpm

    def update(self, changes: dict[str, object]) -> dict[str, int | None]:
        """Apply ``{"rpm": ..., "tpm": ...}`` (either may be absent; None is unlimited) and
        return the limits in force; ValueError and no change when a value is invalid."""
        unknown = set(changes) - {"rpm", "tpm"}
        if unknown:
            raise ValueError(f"unknown limits: {', '.join(sorted(unknown))}")
        settings = self.settings()
        for name, value in changes.items():
            settings[name] = check_limit(name, value)
        self.set_limits(settings["rpm"], settings["tpm"])
        return self.settings()

    def settings(self) -> dict[str, int | None]:
        """The limits in force (``GET /_limits``)."""
        return {"rpm": self.rpm, "tpm": self.tpm}

    def clear(self) -> None:
        self._requests.clear()
        self._tokens.clear()


def check_limit(name: str, value: object) -> int | None:
    """A per-minute limit: a positive integer, or None for unlimited; ValueError otherwise."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name} must be a positive integer or null, got {value!r}")
    return value
