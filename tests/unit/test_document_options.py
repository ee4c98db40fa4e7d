"""--pages, --max-pages and --dpi: what they accept, what they select, how they are stored."""

from __future__ import annotations

from typing import Any

import pytest

from qocr.scheduler.document_options import (
    DEFAULT_MAX_PAGES,
    DocumentOptions,
    DocumentOptionsError,
    document_options,
    parse_pages,
)


@pytest.mark.parametrize(
    ("text", "ranges", "canonical"),
    [
        ("1", ((1, 1),), "1"),
        ("1-3,7", ((1, 3), (7, 7)), "1-3,7"),
        (" 2 - 4 , 9- ", ((2, 4), (9, None)), "2-4,9-"),
        ("5-5", ((5, 5),), "5"),
    ],
)
def test_page_lists_parse_to_ranges(
    text: str, ranges: tuple[tuple[int, int | None], ...], canonical: str
) -> None:
    assert parse_pages(text) == ranges
    assert DocumentOptions(pages=ranges).pages_text == canonical


@pytest.mark.parametrize("text", ["", " ", "0", "3-1", "a", "1,,2", "-3", "1-2-3", "1.5", 7])
def test_a_bad_page_list_is_refused_with_a_reason(text: Any) -> None:
    with pytest.raises(DocumentOptionsError) as caught:
        parse_pages(text)
    assert "page" in caught.value.message


@pytest.mark.parametrize(
    ("pages", "count", "selected"),
    [
        (None, 3, [1, 2, 3]),
        ("1", 3, [1]),
        ("1-3,7", 5, [1, 2, 3]),  # page 7 does not exist: skipped
        ("2-", 4, [2, 3, 4]),
        ("3,1-2,2", 4, [1, 2, 3]),  # in order, each once
        ("9-", 4, []),
        ("1-1000000", 2, [1, 2]),
    ],
)
def test_the_pages_read_are_the_listed_ones_that_exist(
    pages: str | None, count: int, selected: list[int]
) -> None:
    assert document_options(pages).selected(count) == selected


def test_options_round_trip_through_the_batch_source_options() -> None:
    options = document_options("1-3,7", 40, 150)
    stored = options.source_options()
    assert stored == {"pages": "1-3,7", "max_pages": 40, "dpi": 150.0}
    assert DocumentOptions.from_source_options({"s3_mode": "inline", **stored}) == options


def test_a_batch_from_before_documents_reads_every_page() -> None:
    options = DocumentOptions.from_source_options({"s3_mode": "inline"})
    assert options == DocumentOptions()
    assert options.max_pages == DEFAULT_MAX_PAGES and options.dpi is None


@pytest.mark.parametrize(
    ("values", "word"),
    [
        ({"max_pages": 0}, "max_pages"),
        ({"max_pages": 10**9}, "max_pages"),
        ({"max_pages": "5"}, "max_pages"),
        ({"max_pages": True}, "max_pages"),
        ({"dpi": 10}, "dpi"),
        ({"dpi": 5000}, "dpi"),
        ({"dpi": float("nan")}, "dpi"),
        ({"dpi": "300"}, "dpi"),
    ],
)
def test_bad_limits_are_refused(values: dict[str, Any], word: str) -> None:
    with pytest.raises(DocumentOptionsError) as caught:
        document_options(**values)
    assert word in caught.value.message


def test_submit_options_reach_the_batch_and_its_idempotency_digest() -> None:
    from qocr.scheduler.idempotency import request_sha256
    from qocr.scheduler.requests import request_from_options
    from qocr.settings import Settings

    settings = Settings(api="compatible", model="qwen-vl-ocr-latest", s3_mode="inline")
    sources = ["s3://scans/in/"]
    plain = request_from_options(settings, sources, {})
    first = request_from_options(settings, sources, {"pages": "1", "max_pages": 10, "dpi": 150})
    assert first.documents == document_options("1", 10, 150)
    stored = first.spec().source_options
    assert (stored["pages"], stored["max_pages"], stored["dpi"]) == ("1", 10, 150.0)
    assert plain.spec().source_options["pages"] is None
    assert request_sha256(first) != request_sha256(plain)
    with pytest.raises(DocumentOptionsError):
        request_from_options(settings, sources, {"pages": "0-"})


def test_schedules_take_the_same_keys_and_name_a_bad_one(tmp_path: Any) -> None:
    from qocr.scheduler.schedules import ScheduleConfigError, load_schedule_book
    from qocr.settings import Settings

    settings = Settings(api="compatible", model="qwen-vl-ocr-latest", s3_mode="inline")
    base = '[schedules.nightly]\nevery = "1h"\nsources = ["s3://scans/in/"]\n'
    path = tmp_path / "qocr.toml"
    path.write_text(base + 'pages = "1-2"\nmax_pages = 50\ndpi = 200\n')
    schedule = load_schedule_book(path, settings).schedules["nightly"]
    assert schedule.documents == document_options("1-2", 50, 200)
    assert schedule.request(schedule.trigger.latest_at_or_before(_now()) or _now()).documents == (
        schedule.documents
    )
    path.write_text(base + 'pages = "two"\n')
    with pytest.raises(ScheduleConfigError) as caught:
        load_schedule_book(path, settings)
    assert "nightly" in caught.value.message and "pages" in caught.value.message


def _now() -> Any:
    from datetime import UTC, datetime

    return datetime(2026, 11, 30, 12, tzinfo=UTC)
