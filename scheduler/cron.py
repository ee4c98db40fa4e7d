"""Read the five fields of a crontab into the sets of values they allow. Pure; no I/O.

The syntax is the one qocr has always accepted (Celery's crontab): in every field a number,
``*``, a range ``a-b`` (wrapping round when ``b < a``: ``fri-mon``), a step ``*/n`` or
``a-b/n``, and comma-separated lists of these. Day-of-week counts from 0 = Sunday to 6;
days and months may be named by three letters or more (``mon``, ``tues``, ``january``).
"""

from __future__ import annotations

from dataclasses import dataclass

_DAY_NAMES = ("sunday", "monday", "tuesday", "wednesday", "thursday", "friday", "saturday")
_MONTH_NAMES = (
    "january",
    "february",
    "march",
    "april",
    "may",
    "june",
    "july",
    "august",
    "september",
    "october",
    "november",
    "december",
)


@dataclass(frozen=True)
class CronField:
    """One field's name, its smallest and largest value, and the names it accepts."""

    name: str
    low: int
    high: int
    names: tuple[str, ...] = ()  # full names, in order from ``low``

    def parse(self, text: str) -> frozenset[int]:
        """The values ``text`` allows; a ValueError says which part is wrong."""
        values: set[int] = set()
        for part in text.split(","):
            if not part:
                raise ValueError(f"{self.name}: empty part in {text!r}")
            values.update(self._part(part))
        return frozenset(values)

    def _part(self, part: str) -> list[int]:
        body, slash, step_text = part.partition("/")
        if slash and not step_text:
            raise ValueError(f"{self.name}: {part!r} has no step after '/'")
        if body == "*":
            span = list(range(self.low, self.high + 1))
        elif "-" in body:
            first_text, _, last_text = body.partition("-")
            first, last = self._value(first_text), self._value(last_text)
            if last >= first:
                span = list(range(first, last + 1))
            else:  # wraps round: fri-mon is fri, sat, sun, mon
                span = list(range(first, self.high + 1)) + list(range(self.low, last + 1))
        elif slash:
            # `5/15` is not accepted (Celery never took it): say how to write it.
            raise ValueError(f"{self.name}: {part!r}: a step needs '*' or a range, e.g. */15")
        else:
            return [self._value(body)]
        if not slash:
            return span
        step = self._step(step_text, part)
        return span[::step]

    def _step(self, text: str, part: str) -> int:
        if not text.isdigit() or int(text) == 0:
            raise ValueError(f"{self.name}: {part!r}: the step must be a positive number")
        return int(text)

    def _named(self, text: str) -> int:
        """``mon``, ``tues``, ``monday``: at least three letters of one name."""
        lowered = text.lower()
        if len(lowered) >= 3:
            for index, name in enumerate(self.names):
                if name.startswith(lowered):
                    return self.low + index
        raise ValueError(f"{self.name}: {text!r} is not a number or a known name")

    def _value(self, text: str) -> int:
        value = int(text) if text.isdigit() else self._named(text)
        if value > self.high:
            raise ValueError(f"{self.name}: {value} > {self.high}")
        if value < self.low:
            raise ValueError(f"{self.name}: {value} < {self.low}")
        return value


MINUTE = CronField("minute", 0, 59)
HOUR = CronField("hour", 0, 23)
DAY_OF_MONTH = CronField("day-of-month", 1, 31)
MONTH = CronField("month", 1, 12, _MONTH_NAMES)
DAY_OF_WEEK = CronField("day-of-week", 0, 6, _DAY_NAMES)
FIELDS = (MINUTE, HOUR, DAY_OF_MONTH, MONTH, DAY_OF_WEEK)


@dataclass(frozen=True)
class CronSpec:
    """The values each field allows (day-of-week: 0 = Sunday)."""

    minutes: frozenset[int]
    hours: frozenset[int]
    days_of_month: frozenset[int]
    months: frozenset[int]
    days_of_week: frozenset[int]


def parse_cron(expression: str) -> CronSpec:
    """Parse five fields; a ValueError quotes the expression and names the wrong field."""
    fields = expression.split()
    if len(fields) != len(FIELDS):
        raise ValueError(
            f"{expression!r} needs 5 fields (minute hour day-of-month month day-of-week), "
            f"got {len(fields)}"
        )
    try:
        minutes, hours, days, months, weekdays = (
            field.parse(text) for field, text in zip(FIELDS, fields, strict=True)
        )
    except ValueError as exc:
        raise ValueError(f"{expression!r}: {exc}") from None
    return CronSpec(minutes, hours, days, months, weekdays)
