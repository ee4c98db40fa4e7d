"""The windows behind --rpm and --tpm (pure: time is passed in), to the edge of each second."""

from __future__ import annotations

import pytest

from qocr.emulator.limits import RateLimits, SlidingWindow, Throttled, check_limit
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
    window = SlidingWindow.per_second(rpm)
    assert window.capacity == capacity
    assert window.window_s == pytest.approx(window_s)
    # Whatever the split, the sustained rate is the per-minute figure.
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


@pytest.mark.parametrize(
    ("eleventh_at", "admitted"),
    [(0.999, False), (0.9999, False), (1.0, True), (1.0001, True)],
    ids=["1 ms early", "0.1 ms early", "on the edge", "0.1 ms late"],
)
def test_rpm_600_refuses_an_eleventh_request_inside_one_second_to_the_millisecond(
    eleventh_at: float, admitted: bool
) -> None:
    limits = RateLimits(rpm=600, tpm=None)
    assert [limits.admit_request("m", i * 0.1) for i in range(10)] == [None] * 10  # 0.0..0.9
    expected = None if admitted else Throttled.BURST_RATE
    assert limits.admit_request("m", eleventh_at) == expected


def test_ten_at_once_fill_the_second_no_burst_beyond_it() -> None:
    limits = RateLimits(rpm=600, tpm=None)
    assert [limits.admit_request("m", 5.0) for _ in range(11)] == [None] * 10 + [
        Throttled.BURST_RATE
    ]
    assert limits.admit_request("m", 5.9999) is Throttled.BURST_RATE
    assert limits.admit_request("m", 6.0) is None


def test_evenly_spaced_requests_just_under_the_limit_all_pass() -> None:
    # 10/s spaced 0.1 s apart (and 10 µs, against float rounding), for a minute: never refused.
    limits = RateLimits(rpm=600, tpm=None)
    assert all(limits.admit_request("m", i * 0.10001) is None for i in range(600))
    # One more in the last second is one too many.
    assert limits.admit_request("m", 59.99) is Throttled.BURST_RATE


def test_requests_spaced_a_little_too_close_are_refused_once_a_second() -> None:
    # 1 % over the limit: the eleventh request of every second-and-a-bit is refused, so 1 %
    # too fast costs about one request in eleven (a strict window is unforgiving).
    limits = RateLimits(rpm=600, tpm=None)
    times = [i * 0.099 for i in range(1000)]
    refused = [t for t in times if limits.admit_request("m", t) is not None]
    assert len(times) / 12 <= len(refused) <= len(times) / 10
    admitted = [t for t in times if t not in refused]
    assert max_in_window(admitted, 1.0) == 10


def test_a_request_arriving_out_of_order_still_counts_in_its_own_second() -> None:
    window = SlidingWindow(2, 1.0)
    assert window.try_admit(1.2) is not None
    assert window.try_admit(1.1) is not None  # arrived earlier, admitted later
    assert window.try_admit(2.05) is None  # (1.05, 2.05] holds both
    assert window.try_admit(2.1) is not None  # 1.1 left the window first


def test_the_minute_window_answers_rate_quota() -> None:
    # 90 RPM: one request per 2/3 s, and 90 in any minute.
    limits = RateLimits(rpm=90, tpm=None)
    spaced = [i * 0.6667 for i in range(90)]
    assert all(limits.admit_request("m", t) is None for t in spaced)
    limits.set_limits(rpm=60, tpm=None)  # now 60 a minute: the minute is already full
    assert limits.admit_request("m", 60.4) is Throttled.RATE_QUOTA


def test_admissions_never_exceed_capacity_in_any_one_second_window() -> None:
    window = SlidingWindow.per_second(600)
    admitted = [t / 100 for t in range(0, 1000) if window.try_admit(t / 100)]  # 100 tries/s
    assert max_in_window(admitted, 1.0) == 10
    assert len(admitted) == 100  # 10 s at 10 per second


def test_tokens_count_per_minute_input_first_then_output() -> None:
    limits = RateLimits(rpm=None, tpm=1000)
    first = limits.reserve_tokens("m", 0.0, 600)
    assert first is not None
    assert limits.reserve_tokens("m", 30.0, 500) is None  # 600 + 500 > 1000 in one minute
    second = limits.reserve_tokens("m", 30.0, 400)
    assert second is not None
    limits.release_tokens("m", second)  # the request failed: its reservation is given back
    limits.settle_tokens(first, 300)  # the output tokens of a success count too
    assert limits.reserve_tokens("m", 59.99, 200) is None  # 900 + 200
    assert limits.reserve_tokens("m", 60.0, 200) is not None  # the first left the minute


def test_window_reserves_settles_and_releases() -> None:
    window = SlidingWindow(1000, 1.0)
    first = window.try_admit(0.0, 600)
    assert first is not None
    assert window.try_admit(0.1, 500) is None
    second = window.try_admit(0.1, 400)
    assert second is not None
    window.release(second)
    assert window.used(0.2) == 600
    first.amount += 300
    assert window.used(0.2) == 900
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
    assert all(limits.admit_request("m", 0.0) is None for _ in range(10_000))
    reservation = limits.reserve_tokens("m", 0.0, 10**9)
    assert reservation is not None
    limits.release_tokens("m", reservation)


def test_rate_limits_are_per_model_and_clear_forgets_them() -> None:
    limits = RateLimits(rpm=60, tpm=60)
    assert limits.admit_request("a", 0.0) is None
    assert limits.admit_request("a", 0.1) is Throttled.BURST_RATE
    assert limits.admit_request("b", 0.1) is None  # another model has its own window
    first = limits.reserve_tokens("a", 0.0, 1)
    assert first is not None
    limits.release_tokens("a", first)
    assert limits.reserve_tokens("a", 0.0, 60) is not None
    assert limits.reserve_tokens("a", 0.0, 1) is None
    limits.clear()
    assert limits.admit_request("a", 0.2) is None
    assert limits.reserve_tokens("a", 0.2, 1) is not None


def test_a_raised_limit_applies_at_once_and_keeps_what_was_admitted() -> None:
    limits = RateLimits(rpm=600, tpm=None)
    assert all(limits.admit_request("m", 1.0) is None for _ in range(10))
    assert limits.admit_request("m", 1.5) is Throttled.BURST_RATE
    assert limits.update({"rpm": 1200}) == {"rpm": 1200, "tpm": None}
    # 20 a second now; the ten already admitted still count.
    assert [limits.admit_request("m", 1.5) for _ in range(11)] == [None] * 10 + [
        Throttled.BURST_RATE
    ]
    limits.update({"rpm": None})
    assert limits.admit_request("m", 1.5) is None


@pytest.mark.parametrize(
    "changes",
    [{"rpm": 0}, {"rpm": -5}, {"rpm": 1.5}, {"tpm": True}, {"rpm": "600"}, {"burst": 10}],
)
def test_invalid_limit_changes_change_nothing(changes: dict[str, object]) -> None:
    limits = RateLimits(rpm=600, tpm=1000)
    with pytest.raises(ValueError):
        limits.update(changes)
    assert limits.settings() == {"rpm": 600, "tpm": 1000}


def test_check_limit_accepts_positive_integers_and_none() -> None:
    assert check_limit("rpm", 600) == 600
    assert check_limit("rpm", None) is None


@pytest.mark.parametrize(
    ("times", "expected"),
    [([], 0), ([0.0], 1), ([0.0, 0.5, 0.99], 3), ([0.0, 1.0, 2.0], 1), ([0.0, 0.6, 1.2, 1.5], 3)],
)
def test_max_in_window(times: list[float], expected: int) -> None:
    assert max_in_window(times, 1.0) == expected
