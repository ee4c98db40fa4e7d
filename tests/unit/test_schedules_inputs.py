"""Hostile schedule files fail at load with a line naming the schedule and field, never at a
tick (issue 13, point 7): huge or nested format specs in templates, schemas that are
binary, too deep or too large; a BOM is accepted."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest

from qocr.scheduler.schedules import ScheduleConfigError, load_schedule_book, render_template
from qocr.settings import Settings

BASE = '[schedules.nightly]\nevery = "1h"\nsources = ["s3://scans/in/"]\n'
BOM = b"\xef\xbb\xbf"


@pytest.fixture
def settings() -> Settings:
    return Settings(api="compatible", model="qwen-vl-ocr-latest", s3_mode="inline")


def load_error(path: Path, settings: Settings) -> str:
    with pytest.raises(ScheduleConfigError) as caught:
        load_schedule_book(path, settings)
    message = caught.value.message
    assert "\n" not in message and len(message) < 1000
    return message


def config(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "qocr.toml"
    path.write_text(BASE + text, encoding="utf-8")
    return path


@pytest.mark.parametrize(
    ("key", "template"),
    [
        ("batch_name", "{date:>999999999}"),
        ("batch_name", "{date:.99999999}"),
        ("batch_name", "{date:>" + "9" * 5000 + "}"),
        ("batch_name", "{schedule:{time}}"),
        ("batch_name", "{date:d}"),  # a spec a str cannot take: it would fail at every tick
        ("batch_name", "{date!z}"),
        ("results_to", "s3://exports/{date:>999999999}.jsonl"),
    ],
)
def test_a_template_that_cannot_render_small_is_refused_at_load(
    tmp_path: Path, settings: Settings, key: str, template: str
) -> None:
    message = load_error(config(tmp_path, f'{key} = "{template}"\n'), settings)
    assert "schedule 'nightly'" in message and f"{key}: " in message


def test_a_modest_format_spec_still_works(tmp_path: Path, settings: Settings) -> None:
    book = load_schedule_book(
        config(tmp_path, 'batch_name = "{schedule:.5} {batch:>06}"\n'), settings
    )
    nightly = book.get("nightly")
    slot = datetime(2026, 11, 25, 1, tzinfo=UTC)
    assert render_template(nightly.batch_name, nightly, slot, 42) == "night 000042"


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (bytes(range(256)) * 4, "not UTF-8"),
        (b"[" * 30_000 + b"]" * 30_000, "nested too deeply"),
        (json.dumps({f"f{n}": "" for n in range(10_000)}).encode(), "65536-byte limit"),
    ],
    ids=["binary", "nested", "too-large"],
)
def test_a_bad_schema_file_is_one_line(
    tmp_path: Path, settings: Settings, content: bytes, words: str
) -> None:
    (tmp_path / "schema.json").write_bytes(content)
    message = load_error(config(tmp_path, 'schema = "schema.json"\n'), settings)
    assert "schedule 'nightly': schema: " in message and words in message


def test_an_inline_schema_too_large_or_too_deep_is_refused(
    tmp_path: Path, settings: Settings
) -> None:
    fields = ", ".join(f'f{n} = "{"x" * 20}"' for n in range(3_000))
    message = load_error(config(tmp_path, f"schema = {{ {fields} }}\n"), settings)
    assert "schema: " in message and "65536-byte limit" in message
    nested = "{ a = " * 200 + '""' + " }" * 200
    message = load_error(config(tmp_path, f"schema = {nested}\n"), settings)
    assert "schema: " in message and "nested too deeply" in message


def test_a_toml_nested_past_the_parser_is_one_line(tmp_path: Path, settings: Settings) -> None:
    path = tmp_path / "qocr.toml"
    path.write_text("x = " + "[" * 100_000 + "]" * 100_000 + "\n", encoding="utf-8")
    assert "nested too deeply" in load_error(path, settings)


def test_a_bom_is_accepted_in_the_config_and_the_schema_file(
    tmp_path: Path, settings: Settings
) -> None:
    (tmp_path / "schema.json").write_bytes(BOM + b'{"invoice_number": ""}')
    path = tmp_path / "qocr.toml"
    path.write_bytes(BOM + (BASE + 'schema = "schema.json"\n').encode())
    book = load_schedule_book(path, settings)
    assert book.get("nightly").options.result_schema == {"invoice_number": ""}
