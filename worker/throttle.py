"""The throttle every worker shares: requests and tokens per minute, per model.

One public object, :class:`Throttle`, over a small backend (in-memory for the embedded mode
and tests, Redis for a fleet), in the manner of dramatiq's rate limiters.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Protocol

from qocr.worker import gcra
from qocr.worker.gcra import GcraState, Grant

# Aim a little under the limit: arrival times jitter by milliseconds on the wire, and the
# service counts per second.
HEADROOM = 0.97


class ThrottleBackend(Protocol):
    """Where the limiter's state lives; every method is atomic for one model."""

    def reserve(
        self,
        model: str,
        request_interval: float,
        token_interval: float,
        tokens: int,
        max_wait: float,
    ) -> Grant: ...

    def settle(self, model: str, token_interval: float, estimated: int, actual: int) -> None: ...

    def penalize(self, model: str, retry_after: float | None) -> None: ...


class MemoryBackend:
    """The limiter's state in this process: for ``qocr run`` and for tests."""

    def __init__(self, clock: object = time.time) -> None:
        self._clock = clock
        self._states: dict[str, GcraState] = {}
        self._lock = threading.Lock()

    def _now(self) -> float:
        return float(self._clock())  # type: ignore[operator]

    def _state(self, model: str) -> GcraState:
        return self._states.setdefault(model, GcraState())

    def reserve(
        self,
        model: str,
        request_interval: float,
        token_interval: float,
        tokens: int,
        max_wait: float,
    ) -> Grant:
        with self._lock:
            return gcra.reserve(
                self._state(model), self._now(), request_interval, token_interval, tokens, max_wait
            )

    def settle(self, model: str, token_interval: float, estimated: int, actual: int) -> None:
        with self._lock:
            gcra.settle(self._state(model), token_interval, estimated, actual)

    def penalize(self, model: str, retry_after: float | None) -> None:
        with self._lock:
            gcra.penalize(self._state(model), self._now(), retry_after)


@dataclass(frozen=True)
class Limits:
    """One model's budget per minute."""

    rpm: int
    tpm: int | None

    @property
    def request_interval(self) -> float:
        return 60.0 / (self.rpm * HEADROOM)

    @property
    def token_interval(self) -> float:
        return 60.0 / (self.tpm * HEADROOM) if self.tpm else 0.0


class Throttle:
    """Ask before every call; tell it the real usage after, and every 429."""

    def __init__(self, backend: ThrottleBackend, max_wait: float) -> None:
        self.backend = backend
        self.max_wait = max_wait

    def reserve(self, model: str, limits: Limits, tokens: int) -> Grant:
        """A slot for one call of an estimated ``tokens``; not granted if beyond max_wait."""
        return self.backend.reserve(
            model, limits.request_interval, limits.token_interval, tokens, self.max_wait
        )

    def settle(self, model: str, limits: Limits, estimated: int, actual: int) -> None:
        """Charge tokens a call used beyond its estimate (no refunds: see gcra.settle)."""
        if limits.tpm and actual > estimated:
            self.backend.settle(model, limits.token_interval, estimated, actual)

    def penalize(self, model: str, retry_after: float | None) -> None:
        self.backend.penalize(model, retry_after)
