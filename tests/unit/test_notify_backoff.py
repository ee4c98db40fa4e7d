"""When a failed webhook is tried again: doubling waits up to an hour, for up to a day."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from qocr.scheduler.notify import (
    FIRST_RETRY_SECONDS,
    MAX_RETRY_SECONDS,
    RETRY_HORIZON,
    next_attempt,
    retry_delay_seconds,
)

CREATED = datetime(2026, 11, 30, 2, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("attempts", "base"),
    [(1, 10.0), (2, 20.0), (3, 40.0), (9, 2560.0), (10, 3600.0), (40, 3600.0)],
)
def test_the_wait_doubles_up_to_an_hour_within_its_jitter(attempts: int, base: float) -> None:
    waits = [retry_delay_seconds(attempts) for _ in range(200)]

    assert all(0.8 * base <= wait <= 1.2 * base for wait in waits)
    assert retry_delay_seconds(attempts, jitter=0) == base
    assert FIRST_RETRY_SECONDS == 10.0 and MAX_RETRY_SECONDS == 3600.0


def test_the_last_try_is_at_the_horizon_and_after_it_the_delivery_is_given_up() -> None:
    horizon = CREATED + RETRY_HORIZON

    soon, give_up = next_attempt(CREATED, 1, CREATED + timedelta(seconds=5))
    assert not give_up and timedelta(seconds=13) <= soon - CREATED <= timedelta(seconds=17)
    late, give_up = next_attempt(CREATED, 30, horizon - timedelta(minutes=5))
    assert not give_up and late == horizon
    _, give_up = next_attempt(CREATED, 31, horizon)
    assert give_up
