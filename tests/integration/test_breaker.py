"""The fleet's circuit breaker, one contract for both backends (in memory, real Redis)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import redis

from qocr.worker.breaker import (
    FIRST_OPEN_SECONDS,
    MAX_OPEN_SECONDS,
    MIN_CALLS,
    CallOutcome,
    CircuitBreaker,
    KeyValue,
    MemoryKeyValue,
    RedisKeyValue,
)

MODEL = "qwen-vl-ocr-latest"


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture(params=["memory", "redis"])
def kv(request: pytest.FixtureRequest, redis_url: str, clock: Clock) -> Iterator[KeyValue]:
    if request.param == "memory":
        yield MemoryKeyValue(clock)
        return
    # Redis expires keys by its own clock; the tests move theirs by less than the TTLs.
    client = redis.Redis.from_url(redis_url)
    yield RedisKeyValue(client)
    client.close()


def _fail(breaker: CircuitBreaker, times: int) -> None:
    for _ in range(times):
        breaker.record(MODEL, CallOutcome.FAILED)


def test_a_few_failures_among_successes_keep_it_closed(kv: KeyValue, clock: Clock) -> None:
    breaker = CircuitBreaker(kv, clock)
    for _ in range(MIN_CALLS):
        breaker.record(MODEL, CallOutcome.OK)
    _fail(breaker, MIN_CALLS // 2 - 1)
    assert not breaker.is_open(MODEL)
    assert breaker.before_call(MODEL) == 0.0


def test_too_few_calls_say_nothing(kv: KeyValue, clock: Clock) -> None:
    breaker = CircuitBreaker(kv, clock)
    _fail(breaker, MIN_CALLS - 1)
    assert not breaker.is_open(MODEL)


def test_mostly_failing_opens_it_and_only_one_probe_goes(kv: KeyValue, clock: Clock) -> None:
    breaker = CircuitBreaker(kv, clock)
    _fail(breaker, MIN_CALLS)
    assert breaker.is_open(MODEL)
    assert breaker.before_call(MODEL) == 0.0  # the probe
    waits = [breaker.before_call(MODEL) for _ in range(5)]
    assert all(0 < wait <= FIRST_OPEN_SECONDS for wait in waits)


def test_a_failed_probe_doubles_the_wait_up_to_the_cap(kv: KeyValue, clock: Clock) -> None:
    breaker = CircuitBreaker(kv, clock)
    _fail(breaker, MIN_CALLS)
    expected = FIRST_OPEN_SECONDS
    for _ in range(6):
        expected = min(MAX_OPEN_SECONDS, expected * 2)
        breaker.record(MODEL, CallOutcome.FAILED)
        assert breaker.before_call(MODEL) == 0.0 or breaker.is_open(MODEL)
        assert breaker.before_call(MODEL) == pytest.approx(expected, abs=0.01)
    assert expected == MAX_OPEN_SECONDS


def test_a_successful_probe_closes_it_for_everyone(kv: KeyValue, clock: Clock) -> None:
    breaker = CircuitBreaker(kv, clock)
    other_worker = CircuitBreaker(kv, clock)
    _fail(breaker, MIN_CALLS)
    assert other_worker.before_call(MODEL) == 0.0  # the probe, from another worker
    assert breaker.before_call(MODEL) > 0
    other_worker.record(MODEL, CallOutcome.OK)
    assert not breaker.is_open(MODEL)
    assert breaker.before_call(MODEL) == 0.0
    # The outage's failures are forgotten: one more failure does not reopen it.
    breaker.record(MODEL, CallOutcome.FAILED)
    assert not breaker.is_open(MODEL)


def test_rate_limits_are_not_the_breakers_business(kv: KeyValue, clock: Clock) -> None:
    breaker = CircuitBreaker(kv, clock)
    for _ in range(MIN_CALLS * 2):
        breaker.record(MODEL, CallOutcome.NEUTRAL)
    assert not breaker.is_open(MODEL)


def test_models_have_their_own_circuits(kv: KeyValue, clock: Clock) -> None:
    breaker = CircuitBreaker(kv, clock)
    _fail(breaker, MIN_CALLS)
    assert breaker.is_open(MODEL)
    assert not breaker.is_open("qwen-vl-ocr-2025-08-28")


def test_old_failures_leave_the_window(kv: KeyValue, clock: Clock) -> None:
    # Buckets are keyed by the breaker's clock, so this holds for Redis too.
    breaker = CircuitBreaker(kv, clock)
    _fail(breaker, MIN_CALLS - 1)
    clock.now += 60
    breaker.record(MODEL, CallOutcome.FAILED)
    assert not breaker.is_open(MODEL)


class CountingKeyValue:
    """A KeyValue that counts the operations that reach it (each one a Redis round trip)."""

    def __init__(self, inner: KeyValue) -> None:
        self.inner = inner
        self.operations = 0

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)

        def counted(*args: Any, **kwargs: Any) -> Any:
            self.operations += 1
            return method(*args, **kwargs)

        return counted


def test_healthy_calls_cost_no_round_trips_once_closed_was_read(kv: KeyValue, clock: Clock) -> None:
    counting = CountingKeyValue(kv)
    breaker = CircuitBreaker(counting, clock)
    assert breaker.before_call(MODEL) == 0.0  # reads the circuit: one GET
    read_once = counting.operations
    for _ in range(20):
        assert breaker.before_call(MODEL) == 0.0
        breaker.record(MODEL, CallOutcome.OK)
    # At most one flush of the successes counted here, not three round trips a call.
    assert counting.operations - read_once <= 1


def test_successes_counted_locally_weigh_against_failures(kv: KeyValue, clock: Clock) -> None:
    breaker = CircuitBreaker(kv, clock)
    for _ in range(MIN_CALLS * 2):
        assert breaker.before_call(MODEL) == 0.0
        breaker.record(MODEL, CallOutcome.OK)
    _fail(breaker, MIN_CALLS)  # a third of the window's calls: not "mostly failing"
    assert not breaker.is_open(MODEL)
    _fail(breaker, MIN_CALLS * 2)  # now most of them
    assert breaker.is_open(MODEL)
