"""The throttle's contract, run against both backends: in-memory and real Redis."""

from __future__ import annotations

import itertools
from collections.abc import Iterator

import pytest
import redis

from qocr.worker.gcra import PENALTY, RECOVERY_SECONDS
from qocr.worker.throttle import Limits, MemoryBackend, Throttle, ThrottleBackend
from qocr.worker.throttle_redis import RedisBackend


@pytest.fixture(params=["memory", "redis"])
def backend(request: pytest.FixtureRequest) -> Iterator[ThrottleBackend]:
    if request.param == "memory":
        yield MemoryBackend()
        return
    url: str = request.getfixturevalue("redis_url")
    client = redis.Redis.from_url(url)
    yield RedisBackend(client, prefix="qocr-test:throttle:")
    client.close()


def spacing(throttle: Throttle, limits: Limits) -> float:
    """Seconds between two calls reserved now: the request interval over the rate in force."""
    first = throttle.reserve("m", limits, 1).wait
    return throttle.reserve("m", limits, 1).wait - first


def test_requests_are_spaced_evenly(backend: ThrottleBackend) -> None:
    throttle = Throttle(backend, max_wait=10)
    limits = Limits(rpm=600, tpm=None)  # one call every 0.1 s / headroom
    waits = [throttle.reserve("m", limits, tokens=100).wait for _ in range(5)]
    spacing = limits.request_interval
    assert waits[0] == pytest.approx(0, abs=0.01)
    for earlier, later in itertools.pairwise(waits):
        assert later - earlier == pytest.approx(spacing, abs=0.01)


def test_a_slot_beyond_max_wait_is_not_granted_and_costs_nothing(backend: ThrottleBackend) -> None:
    throttle = Throttle(backend, max_wait=0.25)
    limits = Limits(rpm=60, tpm=None)  # one call a second
    assert throttle.reserve("m", limits, 1).granted
    refused = throttle.reserve("m", limits, 1)
    assert not refused.granted
    assert refused.wait == pytest.approx(limits.request_interval, abs=0.05)
    # The refusal reserved nothing: the next caller sees the same wait.
    assert throttle.reserve("m", limits, 1).wait == pytest.approx(refused.wait, abs=0.05)


def test_tokens_bind_when_tpm_is_the_tighter_limit(backend: ThrottleBackend) -> None:
    throttle = Throttle(backend, max_wait=100)
    limits = Limits(rpm=6000, tpm=60_000)  # 1,000 tokens a second
    throttle.reserve("m", limits, tokens=2_000)
    second = throttle.reserve("m", limits, tokens=2_000)
    assert second.wait == pytest.approx(2.0 / 0.97, abs=0.05)


def test_settle_charges_overruns_and_never_refunds(backend: ThrottleBackend) -> None:
    throttle = Throttle(backend, max_wait=100)
    limits = Limits(rpm=6000, tpm=60_000)  # 1,000 tokens a second
    throttle.reserve("m", limits, tokens=2_000)
    # Used less than estimated: the slots already handed out stay where they are.
    throttle.settle("m", limits, estimated=2_000, actual=500)
    assert throttle.reserve("m", limits, tokens=1_000).wait == pytest.approx(2 / 0.97, abs=0.05)
    # Used more: the next caller waits for the overrun too.
    throttle.settle("m", limits, estimated=1_000, actual=2_000)
    assert throttle.reserve("m", limits, tokens=10).wait == pytest.approx(4 / 0.97, abs=0.05)


def test_a_429_slows_down_then_recovers(backend: ThrottleBackend) -> None:
    throttle = Throttle(backend, max_wait=100)
    limits = Limits(rpm=600, tpm=None)
    throttle.penalize("m", retry_after=None)
    assert spacing(throttle, limits) == pytest.approx(limits.request_interval / PENALTY, rel=0.05)


def test_retry_after_pauses_every_caller(backend: ThrottleBackend) -> None:
    throttle = Throttle(backend, max_wait=100)
    throttle.penalize("m", retry_after=2.0)
    assert throttle.reserve("m", Limits(rpm=600, tpm=None), 1).wait == pytest.approx(2.0, abs=0.1)


def test_models_have_separate_budgets(backend: ThrottleBackend) -> None:
    throttle = Throttle(backend, max_wait=100)
    limits = Limits(rpm=60, tpm=None)
    throttle.reserve("a", limits, 1)
    assert throttle.reserve("b", limits, 1).wait == pytest.approx(0, abs=0.01)


def test_redis_keys_expire(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    RedisBackend(client, prefix="qocr-test:throttle:").reserve("m", 0.1, 0.0, 1, 10)
    ttl = client.ttl("qocr-test:throttle:m")
    assert 0 < ttl <= 120
    client.close()


@pytest.mark.parametrize(
    ("elapsed_seconds", "factor"),
    [(0.0, PENALTY), (RECOVERY_SECONDS / 2, (1 + PENALTY) / 2), (RECOVERY_SECONDS, 1.0)],
)
def test_memory_backend_recovers_with_time(elapsed_seconds: float, factor: float) -> None:
    clock = [1000.0]
    throttle = Throttle(MemoryBackend(clock=lambda: clock[0]), max_wait=100)
    limits = Limits(rpm=600, tpm=None)
    throttle.penalize("m", None)
    clock[0] += elapsed_seconds
    assert spacing(throttle, limits) == pytest.approx(limits.request_interval / factor)


def test_a_burst_of_429s_slows_down_once(backend: ThrottleBackend) -> None:
    throttle = Throttle(backend, max_wait=100)
    limits = Limits(rpm=600, tpm=None)
    for _ in range(6):  # six in-flight calls answered 429 together
        throttle.penalize("m", retry_after=None)
    assert spacing(throttle, limits) == pytest.approx(limits.request_interval / PENALTY, rel=0.05)
