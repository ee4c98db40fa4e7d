"""Misbehaviour on demand: failures, dropped connections, hangs, trickles, over-long fields,
and latency.

One seeded :class:`random.Random` draws every decision, one :class:`Plan` per admitted
request, in arrival order; with ``--seed`` the same sequence of requests meets the same
faults. Request ids come from a second generator, so asking for ids never shifts the faults.

The rates can be changed while the emulator runs (``POST /_faults``,
:meth:`FaultInjector.update`): a provider outage or a hanging provider can start and end in
the middle of a batch.
"""

from __future__ import annotations

import math
import random
import uuid
from dataclasses import dataclass
from typing import Any, Literal

Fault = Literal["none", "error", "drop", "hang", "trickle", "long_fields"]
# Drawn in this order from one roll: the first rate the roll falls under wins.
RATE_FAULTS: tuple[tuple[str, Fault], ...] = (
    ("drop_rate", "drop"),
    ("error_rate", "error"),
    ("hang_rate", "hang"),
    ("trickle_rate", "trickle"),
    ("long_fields_rate", "long_fields"),
)
RATE_NAMES = tuple(name for name, _ in RATE_FAULTS)


@dataclass(frozen=True)
class Plan:
    """What happens to one request: its fault (if any), which error, and its latency."""

    fault: Fault
    error_status: int  # 500 or 503 when fault == "error"
    latency_s: float


def check_rates(rates: dict[str, float]) -> None:
    """Raise ValueError unless every rate is in [0, 1] and they add up to at most 1."""
    for name, value in rates.items():
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"{name} must be a number, got {value!r}")
        if not 0.0 <= value <= 1.0:
            raise ValueError(f"{name} must be in [0, 1], got {value}")
    if sum(rates.values()) > 1.0 + 1e-9:
        order = ("error_rate", "drop_rate", "hang_rate", "trickle_rate", "long_fields_rate")
        named = [name for name in order if rates.get(name)]
        raise ValueError(f"{' + '.join(named)} must not exceed 1")


def check_latency(latency_ms: tuple[float, float]) -> None:
    low, high = latency_ms
    if not (math.isfinite(low) and math.isfinite(high)) or low < 0 or high < low:
        raise ValueError(f"latency_ms must be (low, high) with 0 <= low <= high, got {low, high}")


def check_interval(trickle_interval_s: float) -> None:
    if not (math.isfinite(trickle_interval_s) and trickle_interval_s > 0):
        raise ValueError(f"trickle_interval_s must be positive, got {trickle_interval_s}")


class FaultInjector:
    """Draws a :class:`Plan` per request from the current rates and latency range."""

    def __init__(
        self,
        *,
        error_rate: float,
        drop_rate: float,
        latency_ms: tuple[float, float],
        seed: int | None,
        hang_rate: float = 0.0,
        trickle_rate: float = 0.0,
        long_fields_rate: float = 0.0,
        trickle_interval_s: float = 1.0,
    ) -> None:
        self._rates = {
            "drop_rate": drop_rate,
            "error_rate": error_rate,
            "hang_rate": hang_rate,
            "trickle_rate": trickle_rate,
            "long_fields_rate": long_fields_rate,
        }
        self._latency_ms = latency_ms
        self.trickle_interval_s = trickle_interval_s
        self._rng = random.Random(seed)

    def settings(self) -> dict[str, Any]:
        """The current rates, latency and trickle interval (``GET /_faults``)."""
        return {
            **self._rates,
            "latency_ms": list(self._latency_ms),
            "trickle_interval_s": self.trickle_interval_s,
        }

    def update(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Change some settings at once; a ValueError leaves every one unchanged."""
        unknown = sorted(set(changes) - {*RATE_NAMES, "latency_ms", "trickle_interval_s"})
        if unknown:
            raise ValueError(f"unknown fault settings: {', '.join(unknown)}")
        rates = {**self._rates, **{k: v for k, v in changes.items() if k in RATE_NAMES}}
        check_rates(rates)
        latency = self._latency_ms
        if "latency_ms" in changes:
            value = changes["latency_ms"]
            if not isinstance(value, list | tuple) or len(value) != 2:
                raise ValueError("latency_ms must be [low, high]")
            latency = (float(value[0]), float(value[1]))
            check_latency(latency)
        interval = changes.get("trickle_interval_s", self.trickle_interval_s)
        if isinstance(interval, bool) or not isinstance(interval, int | float):
            raise ValueError("trickle_interval_s must be a number")
        check_interval(float(interval))
        self._rates, self._latency_ms = rates, latency
        self.trickle_interval_s = float(interval)
        return self.settings()

    def plan(self) -> Plan:
        # Always three draws, whatever the outcome, so one request's fault never changes
        # how the following requests are drawn.
        roll = self._rng.random()
        status = 500 if self._rng.random() < 0.5 else 503
        low, high = self._latency_ms
        latency_s = self._rng.uniform(low, high) / 1000.0
        threshold = 0.0
        for name, fault in RATE_FAULTS:
            threshold += self._rates[name]
            if roll < threshold:
                return Plan(fault, status if fault == "error" else 0, latency_s)
        return Plan("none", 0, latency_s)


class IdFactory:
    """Request ids: uuid4-shaped, reproducible under a seed."""

    def __init__(self, seed: int | None) -> None:
        self._rng = random.Random(None if seed is None else f"ids-{seed}")

    def request_id(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def completion_id(self) -> str:
        return f"chatcmpl-{self.request_id()}"
