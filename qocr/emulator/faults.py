"""Misbehaviour on demand: random failures, dropped connections and latency.

One seeded :class:`random.Random` draws every decision, one :class:`Plan` per admitted
request, in arrival order; with ``--seed`` the same sequence of requests meets the same
faults. Request ids come from a second generator, so asking for ids never shifts the faults.
"""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from typing import Literal

Fault = Literal["none", "error", "drop"]


@dataclass(frozen=True)
class Plan:
    """What happens to one request: its fault (if any), which error, and its latency."""

    fault: Fault
    error_status: int  # 500 or 503 when fault == "error"
    latency_s: float


class FaultInjector:
    """Draws a :class:`Plan` per request from the configured rates and latency range."""

    def __init__(
        self,
        *,
        error_rate: float,
        drop_rate: float,
        latency_ms: tuple[float, float],
        seed: int | None,
    ) -> None:
        self._error_rate = error_rate
        self._drop_rate = drop_rate
        self._latency_ms = latency_ms
        self._rng = random.Random(seed)

    def plan(self) -> Plan:
        # Always three draws, whatever the outcome, so one request's fault never changes
        # how the following requests are drawn.
        roll = self._rng.random()
        status = 500 if self._rng.random() < 0.5 else 503
        low, high = self._latency_ms
        latency_s = self._rng.uniform(low, high) / 1000.0
        if roll < self._drop_rate:
            return Plan("drop", 0, latency_s)
        if roll < self._drop_rate + self._error_rate:
            return Plan("error", status, latency_s)
        return Plan("none", 0, latency_s)


class IdFactory:
    """Request ids: uuid4-shaped, reproducible under a seed."""

    def __init__(self, seed: int | None) -> None:
        self._rng = random.Random(None if seed is None else f"ids-{seed}")

    def request_id(self) -> str:
        return str(uuid.UUID(int=self._rng.getrandbits(128), version=4))

    def completion_id(self) -> str:
        return f"chatcmpl-{self.request_id()}"
