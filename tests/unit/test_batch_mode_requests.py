"""``mode="batch"`` in a submit's options: taken where the Batch API serves it, else refused."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from qocr.pricing import price_table
from qocr.scheduler.requests import RequestError, request_from_options
from qocr.scheduler.schedules import ScheduleConfigError, parse_schedule_book
from qocr.settings import load_settings


def test_batch_mode_is_kept_on_the_request_and_its_batch() -> None:
    settings = load_settings(region="cn")
    request = request_from_options(settings, ["https://x/a.png"], {"mode": "batch"})
    assert request.mode == "batch" and request.spec().mode == "batch"
    default = request_from_options(settings, ["https://x/a.png"], {})
    assert default.mode == "realtime" and default.spec().mode == "realtime"


@pytest.mark.parametrize(
    ("region", "options", "said"),
    [
        ("intl", {}, "China (Beijing)"),
        ("cn", {"api": "dashscope"}, "OpenAI-compatible"),
        ("cn", {"stream": True}, "does not stream"),
        ("cn", {"model": "qwen-vl-ocr-2024-10-28"}, "does not serve"),
        ("cn", {"mode": "overnight"}, "mode must be one of"),
    ],
)
def test_batch_mode_is_refused_where_it_cannot_work(
    region: str, options: dict[str, object], said: str
) -> None:
    settings = load_settings(region=region)
    with pytest.raises(RequestError) as raised:
        request_from_options(settings, ["https://x/a.png"], {"mode": "batch", **options})
    assert said in raised.value.message


def test_the_batch_rate_halves_every_price_whatever_its_source() -> None:
    table = price_table("cn", price_in=1.0)
    realtime = table.price("qwen-vl-ocr-latest")
    batch = table.for_mode("batch").price("qwen-vl-ocr-latest")
    assert batch.input_per_million == realtime.input_per_million / 2
    assert batch.output_per_million == realtime.output_per_million / 2
    assert batch.cost(1_000_000, 1_000_000) == pytest.approx(
        realtime.cost(1_000_000, 1_000_000) / 2
    )
    assert table.for_mode("realtime") is table


def _schedules(mode: str) -> dict[str, object]:
    return {
        "schedules": {
            "nightly": {"every": "1h", "sources": ["s3://scans/"], "mode": mode},
        }
    }


def test_a_schedule_with_mode_batch_makes_batch_mode_batches(tmp_path: Path) -> None:
    settings = load_settings(region="cn")
    book = parse_schedule_book(_schedules("batch"), settings, tmp_path, "qocr.toml")
    request = book.schedules["nightly"].request(datetime(2026, 12, 1, tzinfo=UTC))
    assert request.mode == "batch" and request.spec().mode == "batch"


def test_a_schedule_with_mode_batch_outside_beijing_is_refused(tmp_path: Path) -> None:
    settings = load_settings(region="intl")
    with pytest.raises(ScheduleConfigError) as raised:
        parse_schedule_book(_schedules("batch"), settings, tmp_path, "qocr.toml")
    assert "China (Beijing)" in raised.value.message
