"""The three retry functions and the tenacity policy built from them."""

from __future__ import annotations

import asyncio
from email.utils import formatdate

import pytest

from qocr.qwen import (
    APIConnectionError,
    AuthenticationError,
    ImageError,
    ProtocolError,
    QuotaExceededError,
    RateLimitError,
    ServerError,
    async_retry_policy,
    backoff_seconds,
    parse_retry_after,
    retry_policy,
    should_retry,
)

NOW = 1_700_000_000.0


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"retry-after-ms": "250"}, 0.25),
        ({"Retry-After-Ms": "250", "Retry-After": "9"}, 0.25),  # ms wins, as in openai-python
        ({"Retry-After": "12"}, 12.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"Retry-After": formatdate(NOW + 30, usegmt=True)}, 30.0),
        ({"Retry-After": formatdate(NOW - 30, usegmt=True)}, 0.0),
        ({"Retry-After": "-3"}, 0.0),
        ({"Retry-After": "soon"}, None),
        ({"retry-after-ms": "x", "Retry-After": "4"}, 4.0),
        ({}, None),
    ],
)
def test_parse_retry_after(headers: dict[str, str], expected: float | None) -> None:
    assert parse_retry_after(headers, now=NOW) == expected


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (RateLimitError("slow"), True),
        (ServerError("boom"), True),
        (APIConnectionError("dropped"), True),
        (ProtocolError("garbled"), True),
        (AuthenticationError("bad key"), False),
        (QuotaExceededError("arrears"), False),
        (ImageError("tiny"), False),
        (ValueError("not ours"), False),
    ],
)
def test_should_retry(error: BaseException, expected: bool) -> None:
    assert should_retry(error) is expected


@pytest.mark.parametrize(
    ("attempt", "rand", "retry_after", "expected"),
    [
        (1, 0.999, None, 0.4995),  # ceiling 0.5 s
        (2, 0.5, None, 0.5),  # ceiling 1 s
        (4, 1.0, None, 4.0),  # ceiling 4 s
        (10, 1.0, None, 8.0),  # capped at 8 s
        (10, 0.0, None, 0.0),  # full jitter goes down to zero
        (1, 0.5, 3.0, 3.0),  # never sooner than the server asked
        (10, 1.0, 30.0, 30.0),  # even past the cap: the caller decides whether to wait
    ],
)
def test_backoff_seconds(
    attempt: int, rand: float, retry_after: float | None, expected: float
) -> None:
    assert backoff_seconds(attempt, retry_after, rand=lambda: rand) == pytest.approx(expected)


def test_backoff_stays_within_full_jitter_bounds() -> None:
    for attempt in range(1, 12):
        for _ in range(50):
            assert 0.0 <= backoff_seconds(attempt) < min(8.0, 0.5 * 2 ** (attempt - 1))


class Flaky:
    """Raises the given errors in turn, then returns "ok"."""

    def __init__(self, *errors: Exception) -> None:
        self.errors = list(errors)
        self.calls = 0

    def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


def test_policy_retries_retryable_errors_and_honours_retry_after() -> None:
    sleeps: list[float] = []
    flaky = Flaky(RateLimitError("slow", retry_after=2.0), ServerError("boom"))
    assert retry_policy(max_attempts=5, sleep=sleeps.append)(flaky) == "ok"
    assert flaky.calls == 3
    assert sleeps[0] >= 2.0
    assert 0.0 <= sleeps[1] < 1.0


def test_policy_reraises_non_retryable_errors_at_once() -> None:
    sleeps: list[float] = []
    flaky = Flaky(AuthenticationError("bad key"))
    with pytest.raises(AuthenticationError):
        retry_policy(sleep=sleeps.append)(flaky)
    assert (flaky.calls, sleeps) == (1, [])


def test_policy_stops_after_max_attempts_with_the_last_error() -> None:
    flaky = Flaky(*[ServerError(f"boom {i}") for i in range(10)])
    with pytest.raises(ServerError, match="boom 2"):
        retry_policy(max_attempts=3, sleep=lambda _: None)(flaky)
    assert flaky.calls == 3


def test_long_retry_after_is_not_waited_in_process() -> None:
    sleeps: list[float] = []
    flaky = Flaky(RateLimitError("come back in a minute", retry_after=60.0))
    with pytest.raises(RateLimitError) as caught:
        retry_policy(max_single_wait_seconds=20.0, sleep=sleeps.append)(flaky)
    assert caught.value.retry_after == 60.0  # the caller reschedules with countdown >= 60
    assert (flaky.calls, sleeps) == (1, [])


def test_policy_does_not_start_a_wait_past_the_total_budget() -> None:
    flaky = Flaky(RateLimitError("slow", retry_after=5.0), RateLimitError("slow", retry_after=5.0))
    sleeps: list[float] = []
    with pytest.raises(RateLimitError):
        retry_policy(max_attempts=10, max_total_seconds=4.0, sleep=sleeps.append)(flaky)
    assert (flaky.calls, sleeps) == (1, [])


def test_async_policy() -> None:
    calls = 0

    async def call() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise APIConnectionError("dropped")
        return "ok"

    async def run() -> str:
        policy = async_retry_policy(max_attempts=5, base=0.001, cap=0.002)
        return await policy(call)

    assert asyncio.run(run()) == "ok"
    assert calls == 3
