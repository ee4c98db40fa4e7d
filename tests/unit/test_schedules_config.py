"""The schedules file: typed schedules from TOML, and errors that name the schedule and field."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from qocr.scheduler.schedules import (
    DEFAULT_TICK_SECONDS,
    ScheduleConfigError,
    load_schedule_book,
    render_template,
)
from qocr.scheduler.slots import CronTrigger, EveryTrigger
from qocr.settings import Settings

EXAMPLE = """
[beat]
tick_seconds = 10

[schedules.invoices]
cron = "0 2 * * *"
timezone = "Europe/Paris"
sources = ["s3://scans/invoices/", "s3://scans/receipts/"]
schema = { invoice_number = "", total = "" }
max_pixels = 2000000
max_tokens = 2048
rotate = true
s3_mode = "presign"
results_to = "s3://exports/{schedule}/{date}.jsonl"

[schedules.quick]
every = "5s"
sources = "s3://scans/inbox/"
only_new = false
task = "text_recognition"
api = "dashscope"
model = "qwen-vl-ocr-2025-11-20"
catch_up = "30m"
batch_name = "inbox {slot}"
"""


@pytest.fixture
def settings() -> Settings:
    return Settings(api="compatible", model="qwen-vl-ocr-latest", s3_mode="inline")


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "qocr.toml"
    path.write_text(text, encoding="utf-8")
    return path


def error_of(tmp_path: Path, settings: Settings, text: str) -> str:
    with pytest.raises(ScheduleConfigError) as caught:
        load_schedule_book(write(tmp_path, text), settings)
    return caught.value.message


def test_the_example_file(tmp_path: Path, settings: Settings) -> None:
    book = load_schedule_book(write(tmp_path, EXAMPLE), settings)
    assert book.tick_seconds == 10
    invoices, quick = book.get("invoices"), book.get("quick")

    assert isinstance(invoices.trigger, CronTrigger)
    assert invoices.timezone.key == "Europe/Paris"
    assert invoices.sources == ("s3://scans/invoices/", "s3://scans/receipts/")
    assert invoices.only_new is True
    assert invoices.catch_up == timedelta(hours=6)
    # An inline schema implies the key-information task.
    assert invoices.options.task == "key_information_extraction"
    assert invoices.options.result_schema == {"invoice_number": "", "total": ""}
    assert (invoices.options.max_pixels, invoices.options.max_tokens) == (2_000_000, 2048)
    assert invoices.options.enable_rotate is True
    # Unset options come from the settings, as on the command line.
    assert (invoices.api, invoices.options.model, invoices.s3_mode) == (
        "compatible",
        "qwen-vl-ocr-latest",
        "presign",
    )

    assert isinstance(quick.trigger, EveryTrigger) and quick.trigger.seconds == 5
    assert quick.sources == ("s3://scans/inbox/",)
    assert quick.only_new is False
    assert (quick.api, quick.options.model, quick.options.task) == (
        "dashscope",
        "qwen-vl-ocr-2025-11-20",
        "text_recognition",
    )
    assert quick.s3_mode == "inline"


def test_request_and_templates(tmp_path: Path, settings: Settings) -> None:
    book = load_schedule_book(write(tmp_path, EXAMPLE), settings)
    invoices = book.get("invoices")
    # 23:30 UTC on 31 December is already 1 January in Paris.
    slot = datetime(2026, 12, 31, 23, 30, tzinfo=UTC)
    request = invoices.request(slot)
    spec = request.spec()
    assert (spec.schedule_name, spec.scheduled_for) == ("invoices", slot)
    assert spec.name == "invoices 2027-01-01 003000"
    assert spec.source_options["s3_mode"] == "presign"
    cache = {k: v for k, v in spec.source_options.items() if k.startswith("cache")}
    # A -latest alias: reused for 30 days by default.
    assert cache == {"cache": True, "cache_max_age_seconds": 30 * 86400, "cache_urls": False}
    assert spec.result_schema == {"invoice_number": "", "total": ""}
    assert invoices.results_uri(slot, 42) == "s3://exports/invoices/2027-01-01.jsonl"
    quick = book.get("quick")
    assert quick.request(slot).spec().name == "inbox 20261231T233000Z"
    assert render_template("{schedule}/{batch}", quick, slot, 7) == "quick/7"
    assert quick.results_uri(slot, 7) is None


def test_due_slot_runs_only_the_latest_slot_within_catch_up(
    tmp_path: Path, settings: Settings
) -> None:
    invoices = load_schedule_book(write(tmp_path, EXAMPLE), settings).get("invoices")
    tonight = datetime(2026, 11, 25, 1, 0, tzinfo=UTC)  # 02:00 in Paris
    assert invoices.due_slot(tonight) == tonight
    assert invoices.due_slot(tonight + timedelta(hours=6)) == tonight
    # Later than catch_up (6h): skipped; tomorrow's run picks its files up.
    assert invoices.due_slot(tonight + timedelta(hours=6, seconds=1)) is None
    # Three nights missed: only the latest night is a candidate, never the older ones.
    assert invoices.due_slot(tonight + timedelta(days=3, hours=1)) == tonight + timedelta(days=3)


def test_a_schema_file_relative_to_the_config(tmp_path: Path, settings: Settings) -> None:
    (tmp_path / "schemas").mkdir()
    (tmp_path / "schemas" / "invoice.json").write_text(json.dumps({"seller": {"name": ""}}))
    text = """
[schedules.kie]
cron = "0 3 * * *"
sources = ["s3://b/p/"]
schema = "schemas/invoice.json"
"""
    book = load_schedule_book(write(tmp_path, text), settings)
    assert book.get("kie").options.result_schema == {"seller": {"name": ""}}
    assert book.tick_seconds == DEFAULT_TICK_SECONDS


BASE = '[schedules.nightly]\nsources = ["s3://b/p/"]\n'


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (BASE, "schedule 'nightly': set exactly one of 'cron' or 'every'"),
        (BASE + 'cron = "0 2 * * *"\nevery = "5s"\n', "set exactly one of 'cron' or 'every'"),
        (BASE + 'cron = "0 2 * *"\n', "schedule 'nightly': cron: '0 2 * *' needs 5 fields"),
        (BASE + 'cron = "0 24 * * *"\n', "schedule 'nightly': cron: '0 24 * * *': "),
        (BASE + 'every = "often"\n', "schedule 'nightly': every: 'often' is not a duration"),
        (BASE + 'every = "0s"\n', "every: an interval must be at least 1s"),
        (BASE + 'every = "1m"\ntimezone = "Mars/Olympus"\n', "timezone: unknown time zone"),
        (BASE + 'every = "1m"\nonly_neww = true\n', "schedule 'nightly': only_neww: unknown key"),
        (BASE + 'every = "1m"\ncatch_up = "soon"\n', "schedule 'nightly': catch_up: 'soon'"),
        (BASE + 'every = "1m"\nmax_tokens = 0\n', "schedule 'nightly': max_tokens: "),
        (BASE + 'every = "1m"\ns3_mode = "stream"\n', "schedule 'nightly': s3_mode: "),
        (BASE + 'every = "1m"\ntask = "poetry"\n', "schedule 'nightly': unknown task 'poetry'"),
        (
            BASE + 'every = "1m"\ntask = "text_recognition"\nprompt = "read it"\n',
            "task and prompt are exclusive",
        ),
        (
            BASE + 'every = "1m"\nresults_to = "s3://exports/nightly/"\n',
            "results_to: must name an object",
        ),
        (BASE + 'every = "1m"\nresults_to = "/tmp/x.jsonl"\n', "results_to: not an s3:// URI"),
        (
            BASE + 'every = "1m"\nbatch_name = "{schedule} {day}"\n',
            "batch_name: unknown field {day}",
        ),
        (BASE + 'every = "1m"\nschema = "missing.json"\n', "schema: "),
        (BASE + 'every = "1m"\nschema = {}\n', "schema: must not be empty"),
        ('[schedules.nightly]\nevery = "1m"\n', "schedule 'nightly': sources: Field required"),
        ('[schedules.nightly]\nevery = "1m"\nsources = []\n', "schedule 'nightly': sources: "),
        ('[schedules."bad name!"]\nevery = "1m"\nsources = ["x"]\n', "a name is 1-100 letters"),
        ("[schedules]\nnightly = 3\n", "schedule 'nightly': must be a table"),
        ("[beat]\ntick_seconds = 0.1\n", "[beat]: tick_seconds: "),
        ("[beat]\ntick = 5\n", "[beat]: tick: unknown key"),
        ("schedules = 3\n", "'schedules' must be a table"),
        ("[schedules.nightly\n", "invalid TOML"),
    ],
)
def test_errors_name_the_schedule_and_field(
    tmp_path: Path, settings: Settings, text: str, expected: str
) -> None:
    message = error_of(tmp_path, settings, text)
    assert expected in message
    assert str(tmp_path / "qocr.toml") in message


def test_error_messages_leave_values_out(tmp_path: Path, settings: Settings) -> None:
    # A value that fails validation is not echoed (it may be a URL with a token in it).
    text = BASE + 'every = "1m"\nmax_tokens = "sk-secret-abcdef123456"\n'
    assert "sk-secret" not in error_of(tmp_path, settings, text)


def test_missing_file_and_unknown_schedule(tmp_path: Path, settings: Settings) -> None:
    with pytest.raises(ScheduleConfigError, match="no such config file") as caught:
        load_schedule_book(tmp_path / "absent.toml", settings)
    assert caught.value.code == "schedule_config_not_found"
    book = load_schedule_book(write(tmp_path, EXAMPLE), settings)
    with pytest.raises(ScheduleConfigError, match=r"no schedule named 'nope' \(configured: "):
        book.get("nope")


def test_other_tables_belong_to_other_features(tmp_path: Path, settings: Settings) -> None:
    book = load_schedule_book(write(tmp_path, "[emulator]\nrpm = 5\n\n[prices]\nx = 1\n"), settings)
    assert book.schedules == {}


def test_the_shipped_example_config(settings: Settings) -> None:
    example = Path(__file__).resolve().parents[2] / "qocr.example.toml"
    book = load_schedule_book(example, settings)
    assert set(book.schedules) == {"invoices-nightly", "inbox"}
    nightly = book.get("invoices-nightly")
    assert nightly.options.task == "key_information_extraction"
    assert nightly.options.result_schema is not None
    slot = datetime(2026, 11, 25, 1, 0, tzinfo=UTC)
    assert nightly.results_uri(slot, 1) == "s3://qocr/exports/invoices-2026-11-25.jsonl"
    assert nightly.trigger.next_after(slot) == datetime(2026, 11, 26, 1, 0, tzinfo=UTC)
