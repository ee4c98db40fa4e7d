"""The throttle's contract, run against both backends: in-memory and real Redis."""

from __future__ import annotations

import itertools
import logging
from collections.abc import Iterator

import pytest
import redis

from qocr.worker.gcra import HEADROOM, HOLD_SECONDS, LEAD_SECONDS
from qocr.worker.throttle import (
    LATE_TOLERANCE_SECONDS,
    Limits,
    MemoryBackend,
    Slot,
    Throttle,
    ThrottleBackend,
)
from qocr.worker.throttle_redis import RedisBackend

PREFIX = "qocr-test:throttle:"


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> Iterator[ThrottleBackend]:
    if request.param == "memory":
        yield MemoryBackend()
        return
    url: str = request.getfixturevalue("redis_url")
    client = redis.Redis.from_url(url)
    for key in client.scan_iter(PREFIX + "*"):
        client.delete(key)
    yield RedisBackend(client, prefix=PREFIX)
    client.close()


def spacing(throttle: Throttle, limits: Limits) -> float:
    """Seconds between two calls reserved now: the request interval over the rate in force."""
    first = throttle.reserve("m", limits, 1).wait
    return throttle.reserve("m", limits, 1).wait - first


def test_requests_are_spaced_evenly(backend: ThrottleBackend) -> None:
    throttle = Throttle(backend, max_wait=10)
    limits = Limits(rpm=600, tpm=None)  # one call every 0.1 s / headroom
    slots = [throttle.reserve("m", limits, tokens=100) for _ in range(5)]
    assert slots[0].wait == pytest.approx(LEAD_SECONDS, abs=0.01)
    for earlier, later in itertools.pairwise(slots):
        assert later.grant.slot - earlier.grant.slot == pytest.approx(
            limits.request_interval, abs=1e-5
        )
        assert later.leaves_at - earlier.leaves_at == pytest.approx(
            limits.request_interval, abs=0.005
        )


def test_a_slot_beyond_max_wait_is_not_granted_and_costs_nothing(backend: ThrottleBackend) -> None:
    throttle = Throttle(backend, max_wait=0.25)
    limits = Limits(rpm=60, tpm=None)  # one call a second
    assert throttle.reserve("m", limits, 1).granted
    refused = throttle.reserve("m", limits, 1)
    assert not refused.granted
    assert refused.wait == pytest.approx(LEAD_SECONDS + limits.request_interval, abs=0.05)
    # The refusal reserved nothing: the next caller sees the same wait.
    assert throttle.reserve("m", limits, 1).wait == pytest.approx(refused.wait, abs=0.05)


def test_tokens_bind_when_tpm_is_the_tighter_limit(backend: ThrottleBackend) -> None:
    throttle = Throttle(backend, max_wait=100)
    limits = Limits(rpm=6000, tpm=60_000)  # 1,000 tokens a second
    first = throttle.reserve("m", limits, tokens=2_000)
    second = throttle.reserve("m", limits, tokens=2_000)
    assert second.wait - first.wait == pytest.approx(2.0 / HEADROOM, abs=0.05)


def test_settle_charges_overruns_and_refunds_what_was_not_used(backend: ThrottleBackend) -> None:
    throttle = Throttle(backend, max_wait=100)
    limits = Limits(rpm=6000, tpm=60_000)  # 1,000 tokens a second
    first = throttle.reserve("m", limits, tokens=2_000)
    # Used more: the next caller waits for the overrun too.
    throttle.settle(first, 3_000)
    assert throttle.reserve("m", limits, tokens=10).wait == pytest.approx(
        first.wait + 3 / HEADROOM, abs=0.05
    )
    # Used less: the part not used goes back to the next callers.
    third = throttle.reserve("m", limits, tokens=4_000)
    throttle.settle(third, 1_000)
    assert throttle.reserve("m", limits, tokens=10).wait == pytest.approx(
        third.wait + 1 / HEADROOM, abs=0.05
    )


def episode(throttle: Throttle, limits: Limits, calls: int, refused_every: int) -> list[Slot]:
    """``calls`` reserved back to back, every ``refused_every``-th answered 429."""
    slots = [throttle.reserve("m", limits, tokens=1) for _ in range(calls)]
    for slot in slots[::refused_every]:
        throttle.penalize("m", None, slot)
    return slots


def test_a_lone_429_changes_nothing(backend: ThrottleBackend) -> None:
    throttle = Throttle(backend, max_wait=100)
    limits = Limits(rpm=600, tpm=None)
    slots = [throttle.reserve("m", limits, tokens=1) for _ in range(50)]
    throttle.penalize("m", None, slots[-1])
    assert spacing(throttle, limits) == pytest.approx(limits.request_interval, rel=0.01)
    assert throttle.fleet_rate("m", limits).factor == 1.0


def test_429s_lower_the_fleet_rate_to_what_the_service_accepted(
    backend: ThrottleBackend, caplog: pytest.LogCaptureFixture
) -> None:
    throttle = Throttle(backend, max_wait=100)
    limits = Limits(rpm=600, tpm=None)
    with caplog.at_level(logging.WARNING, logger="qocr.worker.throttle"):
        episode(throttle, limits, calls=100, refused_every=2)  # 10 s of calls, half refused
    rate = throttle.fleet_rate("m", limits)
    # Half of what was sent at the ceiling went through; a little under it from now on.
    assert rate.factor == pytest.approx(0.5 * HEADROOM, rel=0.05)
    assert rate.requests_per_minute == pytest.approx(600 * HEADROOM * rate.factor)
    assert spacing(throttle, limits) == pytest.approx(
        limits.request_interval / rate.factor, rel=0.05
    )
    # Said once or twice as the measure settles, not once per 429 (fifty of them).
    lowered = [r for r in caplog.records if "lowers its rate" in r.getMessage()]
    assert 1 <= len(lowered) <= 3
    assert "from 594 to" in lowered[0].getMessage()


def test_workers_share_one_rate(redis_url: str) -> None:
    clients = [redis.Redis.from_url(redis_url) for _ in range(2)]
    for key in clients[0].scan_iter(PREFIX + "*"):
        clients[0].delete(key)
    one, two = (Throttle(RedisBackend(c, prefix=PREFIX), max_wait=100) for c in clients)
    limits = Limits(rpm=600, tpm=None)
    episode(one, limits, calls=100, refused_every=4)
    assert two.fleet_rate("m", limits).factor == pytest.approx(0.75 * HEADROOM, rel=0.05)
    assert two.fleet_rate("m", limits).throttled == 0  # the ring counts by slot: not yet due
    for client in clients:
        client.close()


def test_retry_after_pauses_every_caller(backend: ThrottleBackend) -> None:
    throttle = Throttle(backend, max_wait=100)
    throttle.penalize("m", retry_after=2.0)
    assert throttle.reserve("m", Limits(rpm=600, tpm=None), 1).wait == pytest.approx(2.0, abs=0.1)


def test_models_have_separate_budgets(backend: ThrottleBackend) -> None:
    throttle = Throttle(backend, max_wait=100)
    limits = Limits(rpm=60, tpm=None)
    throttle.reserve("a", limits, 1)
    assert throttle.reserve("b", limits, 1).wait == pytest.approx(LEAD_SECONDS, abs=0.01)


def test_redis_keys_expire(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    RedisBackend(client, prefix=PREFIX).reserve("m", 0.1, 0.0, 1, 10)
    ttl = client.ttl(PREFIX + "m")
    assert 0 < ttl <= 120
    client.close()


@pytest.mark.parametrize(
    ("elapsed_seconds", "factor"),
    [(0.0, 0.5), (HOLD_SECONDS, 0.5), (HOLD_SECONDS + 50, 0.8), (HOLD_SECONDS + 200, 1.0)],
    ids=["lowered", "held", "probing", "back at the ceiling"],
)
def test_the_rate_holds_then_climbs_back(elapsed_seconds: float, factor: float) -> None:
    clock = [1000.0]
    throttle = Throttle(MemoryBackend(clock=lambda: clock[0]), max_wait=1000)
    limits = Limits(rpm=600, tpm=None)
    for _ in range(100):
        throttle.reserve("m", limits, 1)  # 10 s of slots
    clock[0] += 10.0
    state = throttle.backend._states["m"]  # type: ignore[attr-defined]
    state.factor, state.penalized_at = 0.5, clock[0]
    clock[0] += elapsed_seconds
    assert throttle.fleet_rate("m", limits).factor == pytest.approx(factor)


class FakeClock:
    """time.monotonic and time.sleep for one thread: sleeping moves the clock."""

    def __init__(self) -> None:
        self.now = 100.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_a_call_waits_for_its_slot_right_before_sending() -> None:
    clock = FakeClock()
    throttle = Throttle(MemoryBackend(), max_wait=10, clock=clock)
    limits = Limits(rpm=600, tpm=None)
    slot = throttle.reserve("m", limits, 1)
    clock.now += 0.01  # the call is counted in SQL meanwhile
    assert throttle.wait_for(slot, clock.sleep) is slot
    assert clock.now == pytest.approx(slot.leaves_at)
    assert clock.slept == [pytest.approx(slot.wait - 0.01)]


def test_a_call_that_cannot_leave_on_time_takes_a_new_slot(backend: ThrottleBackend) -> None:
    clock = FakeClock()
    throttle = Throttle(backend, max_wait=10, clock=clock)
    limits = Limits(rpm=600, tpm=60_000)
    slot = throttle.reserve("m", limits, 500)
    clock.now += slot.wait + 2 * LATE_TOLERANCE_SECONDS  # SQL was slow: late for the slot
    taken = throttle.wait_for(slot, clock.sleep)
    assert taken is not slot and taken.granted
    assert taken.grant.slot > slot.grant.slot
    assert clock.now == pytest.approx(taken.leaves_at)
    # The new slot reserved its own tokens: the next call comes after them.
    after = throttle.reserve("m", limits, 1)
    assert after.grant.slot - taken.grant.slot == pytest.approx(0.5 / HEADROOM, abs=0.01)


def test_a_slightly_late_call_keeps_its_slot() -> None:
    clock = FakeClock()
    throttle = Throttle(MemoryBackend(), max_wait=10, clock=clock)
    slot = throttle.reserve("m", Limits(rpm=600, tpm=None), 1)
    clock.now += slot.wait + LATE_TOLERANCE_SECONDS / 2
    assert throttle.wait_for(slot, clock.sleep) is slot
    assert clock.slept == []


def test_fleet_rate_reports_the_calls_and_429s_of_the_last_minute(
    backend: ThrottleBackend,
) -> None:
    throttle = Throttle(backend, max_wait=100)
    limits = Limits(rpm=6000, tpm=600_000)
    slots = [throttle.reserve("m", limits, tokens=100) for _ in range(20)]  # ~0.2 s ahead
    for slot in slots[:2]:
        throttle.penalize("m", None, slot)
    assert throttle.fleet_rate("m", limits).calls == 0  # not due yet
    import time

    time.sleep(0.4)
    rate = throttle.fleet_rate("m", limits)
    assert (rate.calls, rate.throttled) == (20, 2)
    assert rate.share_429 == pytest.approx(0.1)
    assert rate.tokens_per_minute == pytest.approx(600_000 * HEADROOM)
