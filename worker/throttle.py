"""The throttle every worker shares: requests and tokens per minute, per model.

One public object, :class:`Throttle`, over a small backend (in-memory for the embedded mode
and tests, Redis for a fleet), in the manner of dramatiq's rate limiters. The arithmetic is
:mod:`worker.gcra`; this module adds the caller's side: a reservation as a :class:`Slot` on
this process's clock, the wait until it (a call that can no longer leave on time takes a new
slot), and one log line per change of the fleet's rate.
"""

from __future__ import annotations

import logging
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Protocol

from qocr.qwen.catalog import model_spec
from qocr.worker import gcra
from qocr.worker.gcra import HEADROOM, Decrease, GcraState, Grant, Window

log = logging.getLogger(__name__)


__all__ = ["HEADROOM", "FleetRate", "Limits", "MemoryBackend", "Slot", "Throttle"]

# A call that would leave later than this past its slot takes a new slot instead. HEADROOM
# leaves 10 ms a second of slack: a call later than that crowds the second of the calls after
# it into 429s, and the request still takes a few ms to arrive.
LATE_TOLERANCE_SECONDS = 0.006
# A thread woken for its slot waits for the GIL up to the switch interval (5 ms by default,
# half that slack) while another thread computes; at 1 ms it leaves on time.
SWITCH_INTERVAL_SECONDS = 0.001
# qocr status reads the fleet's calls and 429s of this last stretch.
RECENT_SECONDS = 60.0


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

    def settle(
        self, model: str, token_interval: float, estimated: int, actual: int, slot: float
    ) -> None: ...

    def penalize(
        self,
        model: str,
        retry_after: float | None,
        slot: float | None,
        request_interval: float,
        token_interval: float,
    ) -> Decrease | None: ...

    def recent(self, model: str, seconds: float) -> tuple[float, Window]: ...


class MemoryBackend:
    """The limiter's state in this process: for ``qocr run`` and for tests."""

    def __init__(self, clock: Callable[[], float] = time.time) -> None:
        self._clock = clock
        self._states: dict[str, GcraState] = {}
        self._lock = threading.Lock()

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
                self._state(model),
                self._clock(),
                request_interval,
                token_interval,
                tokens,
                max_wait,
            )

    def settle(
        self, model: str, token_interval: float, estimated: int, actual: int, slot: float
    ) -> None:
        with self._lock:
            gcra.settle(self._state(model), self._clock(), token_interval, estimated, actual, slot)

    def penalize(
        self,
        model: str,
        retry_after: float | None,
        slot: float | None,
        request_interval: float,
        token_interval: float,
    ) -> Decrease | None:
        with self._lock:
            return gcra.penalize(
                self._state(model),
                self._clock(),
                retry_after,
                slot,
                request_interval,
                token_interval,
            )

    def recent(self, model: str, seconds: float) -> tuple[float, Window]:
        with self._lock:
            now = self._clock()
            state = self._state(model)
            return gcra.current_factor(state, now), gcra.recent(state, now, seconds)


@dataclass(frozen=True)
class Limits:
    """One model's budget per minute: the ceilings the fleet's rate stays under."""

    rpm: int
    tpm: int | None

    @classmethod
    def for_model(cls, model: str, rpm: int | None, tpm: int | None) -> Limits:
        """The configured limits (``QOCR_RPM`` / ``QOCR_TPM``), else the model's documented."""
        spec = model_spec(model)
        return cls(rpm=rpm or spec.rpm, tpm=tpm or spec.tpm)

    @property
    def request_interval(self) -> float:
        """Seconds between requests at the ceiling (less the headroom)."""
        return 60.0 / (self.rpm * HEADROOM)

    @property
    def token_interval(self) -> float:
        return 60.0 / (self.tpm * HEADROOM) if self.tpm else 0.0


@dataclass(frozen=True)
class Slot:
    """A reservation as the caller holds it: ``leaves_at`` on ``time.monotonic``."""

    model: str
    limits: Limits
    tokens: int
    grant: Grant
    leaves_at: float

    @property
    def granted(self) -> bool:
        return self.grant.granted

    @property
    def wait(self) -> float:
        return self.grant.wait


@dataclass(frozen=True)
class FleetRate:
    """The rate the fleet uses now for one model, and how its recent calls fared."""

    limits: Limits  # the ceilings
    factor: float  # the share of the ceilings in force
    calls: int  # whose slots fell in the last RECENT_SECONDS
    throttled: int  # of those, answered 429

    @property
    def requests_per_minute(self) -> float:
        return self.limits.rpm * HEADROOM * self.factor

    @property
    def tokens_per_minute(self) -> float | None:
        return self.limits.tpm * HEADROOM * self.factor if self.limits.tpm else None

    @property
    def share_429(self) -> float | None:
        return self.throttled / self.calls if self.calls else None

    def to_dict(self) -> dict[str, object]:
        """For ``qocr status --json`` (see docs/cli-json.md)."""
        return {
            "requests_per_minute": round(self.requests_per_minute, 1),
            "tokens_per_minute": None
            if self.tokens_per_minute is None
            else round(self.tokens_per_minute),
            "rpm_ceiling": self.limits.rpm,
            "tpm_ceiling": self.limits.tpm,
            "share_of_ceiling": round(self.factor, 4),
            "window_seconds": RECENT_SECONDS,
            "calls": self.calls,
            "status_429": self.throttled,
            "share_429": None if self.share_429 is None else round(self.share_429, 4),
        }


class Throttle:
    """Ask before every call, wait for the slot right before sending; tell it the real usage
    after, and every 429."""

    def __init__(
        self,
        backend: ThrottleBackend,
        max_wait: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.backend = backend
        self.max_wait = max_wait
        self._clock = clock
        if sys.getswitchinterval() > SWITCH_INTERVAL_SECONDS:
            sys.setswitchinterval(SWITCH_INTERVAL_SECONDS)

    def reserve(self, model: str, limits: Limits, tokens: int) -> Slot:
        """A slot for one call of an estimated ``tokens``; not granted if beyond max_wait."""
        grant = self.backend.reserve(
            model, limits.request_interval, limits.token_interval, tokens, self.max_wait
        )
        answered = self._clock()
        if grant.recovered:
            log.info(
                "model %s: the fleet is back at its ceiling of %d requests a minute",
                model,
                limits.rpm,
            )
        # The limiter read its clock between asking and the answer, nearer the answer when
        # callers queue for it (a fleet starting at once): count from the answer, so a call
        # is never sent before its slot.
        return Slot(model, limits, tokens, grant, answered + grant.wait)

    def wait_for(self, slot: Slot, sleep: Callable[[float], object] = time.sleep) -> Slot:
        """Sleep until ``slot``, right before sending. A call that can no longer leave on
        time (its worker was slow to get here, or woke up late) takes one new slot; returns
        the slot the call leaves in."""
        for renewals_left in (1, 0):
            late = self._clock() - slot.leaves_at
            if late <= LATE_TOLERANCE_SECONDS:
                if late < 0:
                    sleep(-late)
                if self._clock() - slot.leaves_at <= LATE_TOLERANCE_SECONDS:
                    return slot
            if not renewals_left:
                break
            # The slot given up is lost, its tokens too: its time has passed.
            again = self.reserve(slot.model, slot.limits, slot.tokens)
            if not again.granted:
                break  # late, and no new slot soon enough: go now
            slot = again
        return slot

    def settle(self, slot: Slot, actual: int) -> None:
        """Settle the tokens of a call once its usage is known: overrun charged, rest
        refunded."""
        if slot.limits.tpm and actual != slot.tokens:
            self.backend.settle(
                slot.model, slot.limits.token_interval, slot.tokens, actual, slot.grant.slot
            )

    def penalize(
        self,
        model: str,
        retry_after: float | None,
        slot: Slot | None = None,
    ) -> None:
        """A 429: maybe lower the fleet's rate (logged once, by the caller that lowered it),
        and pause every caller for ``retry_after``. Without the call's slot only the pause."""
        if slot is None:
            self.backend.penalize(model, retry_after, None, 0.0, 0.0)
            return
        self.settle(slot, 0)  # refused: the service took none of its tokens
        decrease = self.backend.penalize(
            model,
            retry_after,
            slot.grant.slot,
            slot.limits.request_interval,
            slot.limits.token_interval,
        )
        if decrease is not None:
            log.warning(
                "model %s: %.1f %% of the last calls answered 429; the fleet lowers its rate "
                "from %d to %d requests a minute (ceiling %d) and probes back up after %d s",
                model,
                100 * decrease.share_429,
                round(slot.limits.rpm * HEADROOM * decrease.before),
                round(slot.limits.rpm * HEADROOM * decrease.after),
                slot.limits.rpm,
                gcra.HOLD_SECONDS,
            )

    def fleet_rate(self, model: str, limits: Limits) -> FleetRate:
        """What the fleet uses now, for ``qocr status`` and the metrics."""
        factor, window = self.backend.recent(model, RECENT_SECONDS)
        return FleetRate(limits, factor, window.calls, window.throttled)
