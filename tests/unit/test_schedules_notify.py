"""A schedule's `notify` URL: checked when the file is read, carried onto each slot's batch."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from qocr.scheduler.schedules import ScheduleConfigError, parse_schedule_book
from qocr.settings import Settings

SETTINGS = Settings(api="compatible", model="qwen-vl-ocr-latest", s3_mode="inline")


def book(notify: str) -> dict[str, object]:
    table = {"every": "1h", "sources": ["s3://scans/inbox/"], "notify": notify}
    return {"schedules": {"nightly": table}}


def test_each_batch_of_the_schedule_is_posted_to_its_notify_url() -> None:
    parsed = parse_schedule_book(
        book("https://hooks.example.com/qocr"), SETTINGS, base_dir=Path("."), where="qocr.toml"
    )
    request = parsed.get("nightly").request(datetime(2026, 11, 30, 2, tzinfo=UTC))

    assert request.notify_url == "https://hooks.example.com/qocr"
    assert request.spec().notify_url == "https://hooks.example.com/qocr"


@pytest.mark.parametrize("notify", ["hooks.example.com/qocr", "ftp://hooks/x", "https://a b/"])
def test_a_bad_notify_url_names_the_schedule_and_the_key(notify: str) -> None:
    with pytest.raises(ScheduleConfigError, match="schedule 'nightly': notify: notify must be"):
        parse_schedule_book(book(notify), SETTINGS, base_dir=Path("."), where="qocr.toml")
