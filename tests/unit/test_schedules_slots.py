"""When schedules fire: crontabs in a time zone (with DST), intervals, and missed slots."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from qocr.scheduler.slots import CronTrigger, EveryTrigger, parse_duration

PARIS = ZoneInfo("Europe/Paris")
NEW_YORK = ZoneInfo("America/New_York")


def utc(
    year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0
) -> datetime:
    return datetime(year, month, day, hour, minute, second, tzinfo=UTC)


def cron(expression: str, zone: ZoneInfo = PARIS) -> CronTrigger:
    return CronTrigger.parse(expression, zone)


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("5s", 5), ("30s", 30), ("10m", 600), ("6h", 21600), ("1d", 86400), (" 2 h ", 7200)],
)
def test_parse_duration(text: str, seconds: int) -> None:
    assert parse_duration(text) == timedelta(seconds=seconds)


@pytest.mark.parametrize("text", ["", "5", "5x", "-5s", "1.5h", "five seconds", "5s 3m"])
def test_parse_duration_rejects(text: str) -> None:
    with pytest.raises(ValueError, match="duration like"):
        parse_duration(text)


@pytest.mark.parametrize(
    ("now", "latest", "upcoming"),
    [
        # Winter: 02:00 in Paris is 01:00 UTC.
        (utc(2026, 11, 25, 10, 0), utc(2026, 11, 25, 1, 0), utc(2026, 11, 26, 1, 0)),
        # Summer: 02:00 in Paris is 00:00 UTC.
        (utc(2026, 7, 1, 12, 0), utc(2026, 7, 1, 0, 0), utc(2026, 7, 2, 0, 0)),
        # Before today's slot: yesterday's is the latest.
        (utc(2026, 11, 25, 0, 59), utc(2026, 11, 24, 1, 0), utc(2026, 11, 25, 1, 0)),
        # On the slot: it is the latest, and the next is tomorrow.
        (utc(2026, 11, 25, 1, 0), utc(2026, 11, 25, 1, 0), utc(2026, 11, 26, 1, 0)),
    ],
)
def test_nightly_cron_in_its_time_zone(now: datetime, latest: datetime, upcoming: datetime) -> None:
    trigger = cron("0 2 * * *")
    assert trigger.latest_at_or_before(now) == latest
    assert trigger.next_after(now) == upcoming


def test_a_skipped_wall_time_fires_at_the_end_of_the_gap() -> None:
    # 29 March 2026: Paris jumps from 02:00 CET to 03:00 CEST; 02:30 does not exist.
    trigger = cron("30 2 * * *")
    assert trigger.next_after(utc(2026, 3, 28, 12)) == utc(2026, 3, 29, 1, 0)  # 03:00 CEST
    assert trigger.next_after(utc(2026, 3, 29, 1, 0)) == utc(2026, 3, 30, 0, 30)  # 02:30 CEST
    assert trigger.latest_at_or_before(utc(2026, 3, 29, 5)) == utc(2026, 3, 29, 1, 0)


def test_a_repeated_wall_time_fires_once_at_its_first_occurrence() -> None:
    # 25 October 2026: Paris goes back from 03:00 CEST to 02:00 CET; 02:30 happens twice.
    trigger = cron("30 2 * * *")
    first = trigger.next_after(utc(2026, 10, 24, 12))
    assert first == utc(2026, 10, 25, 0, 30)  # 02:30 CEST
    assert trigger.next_after(first) == utc(2026, 10, 26, 1, 30)  # tomorrow, 02:30 CET
    # Between the two 02:30s the latest slot is still the first one: no second run.
    assert trigger.latest_at_or_before(utc(2026, 10, 25, 1, 45)) == first


def test_slots_stay_in_order_across_both_transitions() -> None:
    trigger = cron("*/30 * * * *")
    for start, expected in [
        # Spring: 01:00, 01:30 CET, then the gap (02:00, 02:30) collapses onto 03:00 CEST.
        (
            utc(2026, 3, 28, 23, 59),
            [utc(2026, 3, 29, 0, 0), utc(2026, 3, 29, 0, 30), utc(2026, 3, 29, 1, 0)],
        ),
        # Autumn: 02:00 and 02:30 run in CEST only; the repeated hour in CET is skipped.
        (
            utc(2026, 10, 24, 23, 59),
            [utc(2026, 10, 25, 0, 0), utc(2026, 10, 25, 0, 30), utc(2026, 10, 25, 2, 0)],
        ),
    ]:
        slots, now = [], start
        for _ in range(3):
            upcoming = trigger.next_after(now)
            assert upcoming is not None
            slots.append(upcoming)
            now = upcoming
        assert slots == expected


def test_latest_and_next_agree_around_every_slot_of_a_year() -> None:
    trigger = cron("15 */5 * * *", NEW_YORK)
    previous: datetime | None = None
    now = utc(2026, 1, 1, 5)  # 00:00 in New York
    count = 0
    while True:
        upcoming = trigger.next_after(now)
        assert upcoming is not None and upcoming > now
        if upcoming >= utc(2027, 1, 1, 5):
            break
        assert trigger.latest_at_or_before(upcoming) == upcoming
        if previous is not None:
            assert trigger.latest_at_or_before(upcoming - timedelta(microseconds=1)) == previous
        previous = now = upcoming
        count += 1
    # Five slots a day (00:15, 05:15, ... 20:15 local), every day of 2026, DST days too.
    assert count == 365 * 5


def test_weekdays_and_both_day_fields() -> None:
    weekdays = cron("0 9 * * mon-fri", ZoneInfo("UTC"))
    # Friday 27 November 2026 at 10:00: the next run is Monday 30 November.
    assert weekdays.next_after(utc(2026, 11, 27, 10)) == utc(2026, 11, 30, 9)
    assert weekdays.latest_at_or_before(utc(2026, 11, 29, 12)) == utc(2026, 11, 27, 9)
    # Celery's semantics: day-of-month AND day-of-week, so Friday the 13th only.
    friday_13th = cron("0 0 13 * 5", ZoneInfo("UTC"))
    assert friday_13th.next_after(utc(2026, 1, 1)) == utc(2026, 2, 13)
    assert friday_13th.next_after(utc(2026, 2, 13)) == utc(2026, 3, 13)
    assert friday_13th.next_after(utc(2026, 3, 13)) == utc(2026, 11, 13)


@pytest.mark.parametrize(
    ("expression", "message"),
    [
        ("0 2 * *", "needs 5 fields"),
        ("0 2 * * * *", "needs 5 fields"),
        ("61 2 * * *", "61 > 59"),
        ("0 25 * * *", "25 > 23"),
        ("0 2 * * 8", "8 > 6"),
        ("0 2 * * funday", "funday"),
    ],
)
def test_invalid_crontabs(expression: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        cron(expression)


def test_every_fires_on_multiples_since_the_epoch() -> None:
    trigger = EveryTrigger.parse("5s")
    now = utc(2026, 11, 25, 10, 0, 7) + timedelta(milliseconds=300)
    assert trigger.latest_at_or_before(now) == utc(2026, 11, 25, 10, 0, 5)
    assert trigger.next_after(now) == utc(2026, 11, 25, 10, 0, 10)
    on_slot = utc(2026, 11, 25, 10, 0, 10)
    assert trigger.latest_at_or_before(on_slot) == on_slot
    assert trigger.next_after(on_slot) == utc(2026, 11, 25, 10, 0, 15)
    hourly = EveryTrigger.parse("1h")
    assert hourly.latest_at_or_before(utc(2026, 11, 25, 10, 59)) == utc(2026, 11, 25, 10)
    assert hourly.describe() == "every 1h"


def test_naive_times_are_refused() -> None:
    with pytest.raises(ValueError, match="naive"):
        cron("0 2 * * *").latest_at_or_before(datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="naive"):
        EveryTrigger.parse("5s").next_after(datetime(2026, 1, 1))
