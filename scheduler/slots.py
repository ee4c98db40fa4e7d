"""When a schedule fires: its slots (the instants it is due), from a crontab or an interval.

Pure functions of a clock reading; no I/O. Every slot is an aware UTC datetime, so a slot
is one value in the database whatever the schedule's time zone.

Cron expressions have the five usual fields (minute hour day-of-month month day-of-week),
parsed by :mod:`scheduler.cron` with Celery's semantics, which qocr has always used:
day-of-week counts from 0 = Sunday to 6 (names like ``mon-fri`` work), and when both day
fields are restricted a day must match *both* (Vixie cron takes either). They are read as
wall-clock times in the schedule's time zone:

- a wall time that does not exist (the spring-forward gap) fires at the end of the gap,
  e.g. ``30 2 * * *`` in Europe/Paris fires at 03:00 CEST on that Sunday;
- a wall time that occurs twice (fall back) fires once, at its first occurrence.

An interval (``every = "5s"``, ``"10m"``, ``"2h"``, ``"1d"``) fires on multiples of its
length since the Unix epoch (UTC), so ``every = "1h"`` fires on every UTC hour.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Protocol
from zoneinfo import ZoneInfo

from qocr.scheduler.cron import parse_cron

# The rarest restricted day a crontab can name (29 February that is also a given weekday)
# comes back within 28 years; searching farther means the expression never fires.
MAX_SEARCH_DAYS = 366 * 29
# Daylight-saving gaps are at most two hours wide (one hour almost everywhere).
MAX_GAP_MINUTES = 180
_DURATION = re.compile(r"^\s*(\d+)\s*(s|m|h|d)\s*$")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class Trigger(Protocol):
    """The instants a schedule is due at."""

    def latest_at_or_before(self, now: datetime) -> datetime | None:
        """The last slot at or before ``now`` (None if there has never been one)."""
        ...

    def next_after(self, now: datetime) -> datetime | None:
        """The first slot strictly after ``now`` (None if there is none)."""
        ...

    def describe(self) -> str:
        """How a person wrote it, e.g. ``cron 0 2 * * * (Europe/Paris)``."""
        ...


def parse_duration(text: str) -> timedelta:
    """``"30s"``, ``"5m"``, ``"6h"``, ``"1d"``; a ValueError says what is accepted."""
    match = _DURATION.match(text)
    if match is None:
        raise ValueError(f"{text!r} is not a duration like 30s, 5m, 6h or 1d")
    return timedelta(seconds=int(match.group(1)) * _UNIT_SECONDS[match.group(2)])


def _require_aware(now: datetime) -> None:
    if now.tzinfo is None:
        raise ValueError("naive datetime given to a trigger")


@dataclass(frozen=True)
class EveryTrigger:
    """Due every ``seconds``, on multiples of it since the Unix epoch."""

    seconds: int
    text: str

    @classmethod
    def parse(cls, text: str) -> EveryTrigger:
        seconds = int(parse_duration(text).total_seconds())
        if seconds < 1:
            raise ValueError("an interval must be at least 1s")
        return cls(seconds=seconds, text=text.strip())

    def latest_at_or_before(self, now: datetime) -> datetime | None:
        _require_aware(now)
        elapsed = (now - _EPOCH) // timedelta(seconds=1)
        return _EPOCH + timedelta(seconds=elapsed - elapsed % self.seconds)

    def next_after(self, now: datetime) -> datetime | None:
        latest = self.latest_at_or_before(now)
        assert latest is not None
        return latest + timedelta(seconds=self.seconds)

    def describe(self) -> str:
        return f"every {self.text}"


@dataclass(frozen=True)
class CronTrigger:
    """A five-field crontab read in ``timezone``'s wall-clock time."""

    expression: str
    timezone: ZoneInfo
    minutes: tuple[int, ...]
    hours: tuple[int, ...]
    days_of_month: frozenset[int]
    months: frozenset[int]
    days_of_week: frozenset[int]  # 0 = Sunday

    @classmethod
    def parse(cls, expression: str, timezone: ZoneInfo) -> CronTrigger:
        """Parse the five fields; a ValueError names the field that is wrong."""
        spec = parse_cron(expression)
        return cls(
            expression=" ".join(expression.split()),
            timezone=timezone,
            minutes=tuple(sorted(spec.minutes)),
            hours=tuple(sorted(spec.hours)),
            days_of_month=spec.days_of_month,
            months=spec.months,
            days_of_week=spec.days_of_week,
        )

    def latest_at_or_before(self, now: datetime) -> datetime | None:
        _require_aware(now)
        day = now.astimezone(self.timezone).date()
        for _ in range(MAX_SEARCH_DAYS):
            if self._matches(day):
                for hour in reversed(self.hours):
                    for minute in reversed(self.minutes):
                        slot = self._instant(day, hour, minute)
                        if slot <= now:
                            return slot
            day -= timedelta(days=1)
        return None

    def next_after(self, now: datetime) -> datetime | None:
        _require_aware(now)
        day = now.astimezone(self.timezone).date()
        for _ in range(MAX_SEARCH_DAYS):
            if self._matches(day):
                for hour in self.hours:
                    for minute in self.minutes:
                        slot = self._instant(day, hour, minute)
                        if slot > now:
                            return slot
            day += timedelta(days=1)
        return None

    def describe(self) -> str:
        return f"cron {self.expression} ({self.timezone.key})"

    def _matches(self, day: date) -> bool:
        return (
            day.month in self.months
            and day.day in self.days_of_month
            and day.isoweekday() % 7 in self.days_of_week
        )

    def _instant(self, day: date, hour: int, minute: int) -> datetime:
        """The UTC instant of a wall time; the end of the gap when the wall time is skipped."""
        wall = datetime.combine(day, time(hour, minute))
        for _ in range(MAX_GAP_MINUTES + 1):
            instant = wall.replace(tzinfo=self.timezone).astimezone(UTC)
            # fold=0 picks the first of two occurrences; a round trip that changes the wall
            # time means this wall time does not exist (a spring-forward gap).
            if instant.astimezone(self.timezone).replace(tzinfo=None) == wall:
                return instant
            wall += timedelta(minutes=1)
        raise ValueError(f"{self.timezone.key} skips more than {MAX_GAP_MINUTES} minutes")
