"""The throttle's contract, run against both backends: in-memory and real Redis."""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Iterator

import pytest
import redis

from qocr.worker.gcra import (
    BUCKET_SECONDS,
    HEADROOM,
    HOLD_SECONDS,
    LEAD_SECONDS,
    START_SECONDS,
    START_SLOWDOWN,
)
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
    first = throttle.reserve("m", limits, 1).grant.slot
    return throttle.reserve("m", limits, 1).grant.slot - first


def past_the_start(throttle: Throttle, limits: Limits, model: str = "m") -> Slot:
    """Reserve one-token calls until the budget's start (wider spacing) is over."""
    first = last = throttle.reserve(model, limits, 1)
    while last.grant.slot - first.grant.slot < START_SECONDS:
        last = throttle.reserve(model, limits, 1)
    return last


def test_a_start_is_spread_then_requests_are_spaced_evenly(backend: ThrottleBackend) -> None:
    throttle = Throttle(backend, max_wait=30)
    limits = Limits(rpm=600, tpm=None)  # one call every 0.1 s / headroom
    first = throttle.reserve("m", limits, tokens=100)
    second = throttle.reserve("m", limits, tokens=100)
    assert first.wait == pytest.approx(0.0, abs=0.01)  # a budget with room: at once
    assert second.grant.slot - first.grant.slot == pytest.approx(
        limits.request_interval * (1 + START_SLOWDOWN), abs=1e-5
    )
    past_the_start(throttle, limits)
    slots = [throttle.reserve("m", limits, tokens=100) for _ in range(5)]
    for earlier, later in itertools.pairwise(slots):
        assert later.grant.slot - earlier.grant.slot == pytest.approx(
            limits.request_interval, abs=1e-5
        )
        assert later.leaves_at - earlier.leaves_at == pytest.approx(
            limits.request_interval, abs=0.005
        )


def test_a_slot_beyond_max_wait_is_not_granted_and_costs_nothing(backend: ThrottleBackend) -> None:
    throttle = Throttle(backend, max_wait=0.25)
    limits = Limits(rpm=60, tpm=None)  # one call a second (1.5 s at the start)
    assert throttle.reserve("m", limits, 1).granted
    refused = throttle.reserve("m", limits, 1)
    assert not refused.granted
    assert refused.wait == pytest.approx(limits.request_interval * (1 + START_SLOWDOWN), abs=0.05)
    # The refusal reserved nothing: the next caller sees the same wait.
    assert throttle.reserve("m", limits, 1).wait == pytest.approx(refused.wait, abs=0.05)


def test_tokens_bind_when_tpm_is_the_tighter_limit(backend: ThrottleBackend) -> None:
    throttle = Throttle(backend, max_wait=100)
    limits = Limits(rpm=6000, tpm=60_000)  # 1,000 tokens a second
    past_the_start(throttle, limits)
    first = throttle.reserve("m", limits, tokens=2_000)
    second = throttle.reserve("m", limits, tokens=2_000)
    assert second.wait - first.wait == pytest.approx(2.0 / HEADROOM, abs=0.05)


def test_settle_charges_overruns_and_refunds_what_was_not_used(backend: ThrottleBackend) -> None:
    throttle = Throttle(backend, max_wait=100)
    limits = Limits(rpm=6000, tpm=60_000)  # 1,000 tokens a second
    past_the_start(throttle, limits)
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
    throttle.penalize("m", None, past_the_start(throttle, limits))
    assert spacing(throttle, limits) == pytest.approx(limits.request_interval, rel=0.01)
    assert throttle.fleet_rate("m", limits).factor == 1.0


def test_a_burst_of_429s_lowers_the_rate_once(
    backend: ThrottleBackend, caplog: pytest.LogCaptureFixture
) -> None:
    throttle = Throttle(backend, max_wait=100)
    limits = Limits(rpm=600, tpm=None)
    past_the_start(throttle, limits)
    with caplog.at_level(logging.WARNING, logger="qocr.worker.throttle"):
        episode(throttle, limits, calls=100, refused_every=2)  # fifty 429s at once
    rate = throttle.fleet_rate("m", limits)
    assert 0.5 < rate.factor < 0.99
    assert rate.requests_per_minute == pytest.approx(600 * HEADROOM * rate.factor)
    assert spacing(throttle, limits) == pytest.approx(
        limits.request_interval / rate.factor, rel=0.01
    )
    # One change, said once (not fifty times).
    lowered = [r.getMessage() for r in caplog.records if "lowers its rate" in r.getMessage()]
    assert len(lowered) == 1
    assert f"to {round(rate.requests_per_minute)} requests a minute (ceiling 600)" in lowered[0]


def test_429s_converge_on_what_the_account_allows(caplog: pytest.LogCaptureFixture) -> None:
    # An account allowed 300 a minute behind a ceiling of 600, enforced as the service does
    # (5 in any second; a refused call takes nothing); the fleet sends whenever it may.
    clock = [1000.0]
    throttle = Throttle(MemoryBackend(clock=lambda: clock[0]), max_wait=100)
    limits = Limits(rpm=600, tpm=None)
    accepted: list[float] = []
    refused: list[float] = []
    with caplog.at_level(logging.WARNING, logger="qocr.worker.throttle"):
        while clock[0] < 1120:
            slot = throttle.reserve("m", limits, 1)
            clock[0] = slot.grant.slot
            if sum(1 for t in accepted[-5:] if t > clock[0] - 1.0) >= 5:
                refused.append(clock[0])
                throttle.penalize("m", None, slot)
            else:
                accepted.append(clock[0])
    # Within a minute it settles at >= 0.9 of 300, and stays there with few 429s.
    settled = [t for t in accepted if t >= 1060]
    assert len(settled) / 60 * 60 >= 0.9 * 300
    late_refused = [t for t in refused if t >= 1060]
    assert len(late_refused) <= 0.05 * (len(settled) + len(late_refused))
    assert len(refused) <= 0.1 * (len(accepted) + len(refused))
    # A handful of changes, each said once.
    lowered = [r for r in caplog.records if "lowers its rate" in r.getMessage()]
    assert 1 <= len(lowered) <= 15


def test_workers_share_one_rate(redis_url: str) -> None:
    clients = [redis.Redis.from_url(redis_url) for _ in range(2)]
    for key in clients[0].scan_iter(PREFIX + "*"):
        clients[0].delete(key)
    one, two = (Throttle(RedisBackend(c, prefix=PREFIX), max_wait=100) for c in clients)
    limits = Limits(rpm=600, tpm=None)
    past_the_start(one, limits)
    episode(one, limits, calls=100, refused_every=4)
    lowered = one.fleet_rate("m", limits).factor
    assert lowered < 1.0
    assert two.fleet_rate("m", limits).factor == lowered
    assert spacing(two, limits) == pytest.approx(limits.request_interval / lowered, rel=0.01)
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
    assert throttle.reserve("a", limits, 1).wait > 1
    assert throttle.reserve("b", limits, 1).wait == pytest.approx(0.0, abs=0.01)


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
    throttle.reserve("m", limits, 1)  # the budget is busy: the next slot is a lead ahead
    slot = throttle.reserve("m", limits, 1)
    assert slot.wait >= LEAD_SECONDS
    clock.now += 0.01  # the call is counted in SQL meanwhile
    assert throttle.wait_for(slot, clock.sleep) is slot
    assert clock.now == pytest.approx(slot.leaves_at)
    assert clock.slept == [pytest.approx(slot.wait - 0.01)]


def test_a_call_that_cannot_leave_on_time_takes_a_new_slot(backend: ThrottleBackend) -> None:
    clock = FakeClock()
    throttle = Throttle(backend, max_wait=20, clock=clock)
    limits = Limits(rpm=600, tpm=60_000)
    past_the_start(throttle, limits)
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
    # The first slot is due at once: it is counted as soon as its bucket of slots is over, so
    # start at a bucket's beginning, or the reservations below may straddle a bucket's end.
    time.sleep(BUCKET_SECONDS - time.time() % BUCKET_SECONDS)
    slots = [throttle.reserve("m", limits, tokens=100) for _ in range(20)]  # ~0.2 s ahead
    for slot in slots[:2]:
        throttle.penalize("m", None, slot)
    assert throttle.fleet_rate("m", limits).calls == 0  # not due yet
    time.sleep(0.6)
    rate = throttle.fleet_rate("m", limits)
    assert (rate.calls, rate.throttled) == (20, 2)
    assert rate.share_429 == pytest.approx(0.1)
    assert rate.tokens_per_minute == pytest.approx(600_000 * HEADROOM)


def test_at_a_high_rate_the_lead_is_one_interval(backend: ThrottleBackend) -> None:
    throttle = Throttle(backend, max_wait=10)
    limits = Limits(rpm=60_000, tpm=None)  # about a millisecond between calls
    throttle.reserve("m", limits, 1)
    second = throttle.reserve("m", limits, 1)  # the budget is busy: a lead, of one interval
    assert second.wait < LEAD_SECONDS / 2
