"""The per-second windows behind --rpm and --tpm (pure: time is passed in)."""

from __future__ import annotations

import pytest

from qocr.emulator.limits import RateLimits, SlidingWindow
from qocr.emulator.stats import max_in_window


@pytest.mark.parametrize(
    ("rpm", "capacity", "window_s"),
    [
        (600, 10, 1.0),
        (1200, 20, 1.0),
        (60, 1, 1.0),
        (90, 1, 60 / 90),
        (30, 1, 2.0),
        (6_000_000, 100_000, 1.0),
    ],
)
def test_per_minute_limits_become_per_second_windows(
    rpm: int, capacity: int, window_s: float
) -> None:
    window = SlidingWindow.per_minute(rpm)
    assert window.capacity == capacity
    assert window.window_s == pytest.approx(window_s)
    # Whatever the split, the sustained rate is the per-minute limit.
    assert window.capacity * 60 / window.window_s == pytest.approx(rpm)


def test_window_admits_capacity_then_refuses_until_the_oldest_expires() -> None:
    window = SlidingWindow(3, 1.0)
    assert all(window.try_admit(10.0 + i * 0.1) for i in range(3))  # 10.0, 10.1, 10.2
    assert window.try_admit(10.5) is None
    assert window.try_admit(10.99) is None
    # Exactly one second after the first admission, that admission has left the window.
    assert window.try_admit(11.0) is not None
    assert window.try_admit(11.05) is None
    assert window.try_admit(11.1) is not None


def test_admissions_never_exceed_capacity_in_any_one_second_window() -> None:
    window = SlidingWindow.per_minute(600)
    admitted = [t / 100 for t in range(0, 1000) if window.try_admit(t / 100)]  # 100 tries/s
    assert max_in_window(admitted, 1.0) == 10
    assert len(admitted) == 100  # 10 s at 10 per second


def test_token_window_reserves_settles_and_releases() -> None:
    window = SlidingWindow(1000, 1.0)
    first = window.try_admit(0.0, 600)
    assert first is not None
    assert window.try_admit(0.1, 500) is None  # 600 + 500 > 1000
    second = window.try_admit(0.1, 400)
    assert second is not None
    window.release(second)  # the request failed: its reservation is given back
    assert window.used(0.2) == 600
    first.amount += 300  # the output tokens of a success count too
    assert window.used(0.2) == 900
    assert window.try_admit(0.3, 200) is None
    assert window.used(1.0) == 0


def test_oversized_request_passes_only_alone() -> None:
    window = SlidingWindow(100, 1.0)
    assert window.try_admit(0.0, 250) is not None  # larger than the window, but it is empty
    assert window.try_admit(0.5, 1) is None
    assert window.try_admit(1.01, 1) is not None


def test_release_of_an_expired_or_foreign_admission_is_harmless() -> None:
    window = SlidingWindow(2, 1.0)
    other = SlidingWindow(2, 1.0).try_admit(0.0)
    assert other is not None
    window.release(other)
    assert window.used(0.0) == 0


def test_rate_limits_unlimited_when_not_configured() -> None:
    limits = RateLimits(rpm=None, tpm=None)
    assert all(limits.admit_request("m", 0.0) for _ in range(10_000))
    reservation = limits.reserve_tokens("m", 0.0, 10**9)
    assert reservation is not None
    limits.release_tokens("m", reservation)


def test_rate_limits_are_per_model_and_clear_forgets_them() -> None:
    limits = RateLimits(rpm=60, tpm=60)
    assert limits.admit_request("a", 0.0)
    assert not limits.admit_request("a", 0.1)
    assert limits.admit_request("b", 0.1)  # another model has its own window
    first = limits.reserve_tokens("a", 0.0, 1)
    assert first is not None
    assert limits.reserve_tokens("a", 0.0, 1) is None
    limits.release_tokens("a", first)
    assert limits.reserve_tokens("a", 0.0, 1) is not None
    limits.clear()
    assert limits.admit_request("a", 0.2)
    assert limits.reserve_tokens("a", 0.2, 1) is not None


@pytest.mark.parametrize(
    ("times", "expected"),
    [([], 0), ([0.0], 1), ([0.0, 0.5, 0.99], 3), ([0.0, 1.0, 2.0], 1), ([0.0, 0.6, 1.2, 1.5], 3)],
)
def test_max_in_window(times: list[float], expected: int) -> None:
    assert max_in_window(times, 1.0) == expected
