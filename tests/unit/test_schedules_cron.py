"""Reading crontab fields: the syntax qocr has always accepted, and clear errors for the rest."""

from __future__ import annotations

import re

import pytest

from qocr.scheduler.cron import (
    DAY_OF_MONTH,
    DAY_OF_WEEK,
    HOUR,
    MINUTE,
    MONTH,
    CronField,
    parse_cron,
)


@pytest.mark.parametrize(
    ("field", "text", "values"),
    [
        (MINUTE, "0", {0}),
        (MINUTE, "*", set(range(60))),
        (MINUTE, "*/15", {0, 15, 30, 45}),
        (MINUTE, "0-10/3", {0, 3, 6, 9}),
        (MINUTE, "50-5", {50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 0, 1, 2, 3, 4, 5}),
        (MINUTE, "1,2,3-5", {1, 2, 3, 4, 5}),
        (HOUR, "*/5", {0, 5, 10, 15, 20}),
        (HOUR, "7,13", {7, 13}),
        (DAY_OF_MONTH, "*", set(range(1, 32))),
        (DAY_OF_MONTH, "*/7", {1, 8, 15, 22, 29}),
        (MONTH, "jan-mar", {1, 2, 3}),
        (MONTH, "11-2", {11, 12, 1, 2}),
        (MONTH, "September,DEC", {9, 12}),
        (DAY_OF_WEEK, "mon-fri", {1, 2, 3, 4, 5}),
        (DAY_OF_WEEK, "sat-mon", {6, 0, 1}),
        (DAY_OF_WEEK, "sunday", {0}),
        (DAY_OF_WEEK, "tues,thurs", {2, 4}),
        (DAY_OF_WEEK, "fri-tue/2", {5, 0, 2}),
    ],
)
def test_a_field_allows(field: CronField, text: str, values: set[int]) -> None:
    assert field.parse(text) == values


@pytest.mark.parametrize(
    ("field", "text", "message"),
    [
        (MINUTE, "60", "minute: 60 > 59"),
        (DAY_OF_MONTH, "0", "day-of-month: 0 < 1"),
        (MONTH, "13", "month: 13 > 12"),
        (DAY_OF_WEEK, "7", "day-of-week: 7 > 6"),
        (DAY_OF_WEEK, "funday", "'funday' is not a number or a known name"),
        (DAY_OF_WEEK, "mo", "'mo' is not a number or a known name"),
        (MINUTE, "jan", "'jan' is not a number"),  # names belong to their own field
        (MINUTE, "1,,2", "empty part"),
        (MINUTE, "*/0", "the step must be a positive number"),
        (MINUTE, "*/", "no step after '/'"),
        (MINUTE, "5/10", "a step needs '*' or a range"),
        (MINUTE, "-5", "'' is not a number"),
    ],
)
def test_a_field_refuses(field: CronField, text: str, message: str) -> None:
    with pytest.raises(ValueError, match=re.escape(message)):
        field.parse(text)


def test_an_expression_names_itself_and_its_field_when_wrong() -> None:
    spec = parse_cron("30 7,13 * * mon-fri")
    assert (spec.minutes, spec.hours, spec.days_of_week) == (
        frozenset({30}),
        frozenset({7, 13}),
        frozenset({1, 2, 3, 4, 5}),
    )
    assert spec.days_of_month == frozenset(range(1, 32))
    assert spec.months == frozenset(range(1, 13))
    with pytest.raises(ValueError, match=r"^'0 24 \* \* \*': hour: 24 > 23$"):
        parse_cron("0 24 * * *")
    with pytest.raises(ValueError, match="needs 5 fields"):
        parse_cron("0 2 * *")
