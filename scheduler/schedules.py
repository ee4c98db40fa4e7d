"""Scheduled jobs as configured in ``qocr.toml`` (path from ``QOCR_CONFIG``), validated once.

    [beat]
    tick_seconds = 30              # how often `qocr beat` sends the tick

    [schedules.invoices]
    cron = "0 2 * * *"             # or: every = "5s" / "10m" / "2h" / "1d"
    timezone = "Europe/Paris"      # for cron and for {date} in templates; default UTC
    sources = ["s3://scans/invoices/"]
    only_new = true                # skip objects done by an earlier run (same key + ETag)
    catch_up = "6h"                # a missed slot still runs if at most this late
    task = "key_information_extraction"
    schema = { invoice_number = "", total = "" }   # or a JSON file: schema = "invoice.json"
    results_to = "s3://exports/invoices/{date}.jsonl"
    notify = "https://hooks.example.com/qocr"   # POSTed when each batch ends (signed)

Every other batch option of ``qocr submit`` has a key of the same name (``api``, ``model``,
``prompt``, ``min_pixels``, ``max_pixels``, ``rotate``, ``max_tokens``, ``stream``,
``s3_mode``, ``mode`` (``"batch"``: the Batch API), ``batch_name``, ``cache`` (default
true), ``cache_max_age`` (e.g. ``"7d"``),
``cache_urls``, ``pages`` (e.g. ``"1-3,7"``), ``max_pages``, ``dpi``, and the sampling
options ``temperature``, ``top_p``, ``top_k``,
``repetition_penalty``, ``presence_penalty``, ``seed``, ``stop`` (a string or a list), whose
defaults the reference recommends keeping); unset ones fall back to the settings, as on
the command line.
A bad file raises :class:`ScheduleConfigError` naming the schedule and the field. Tables
other than ``[beat]`` and ``[schedules]`` belong to other features and are not read here.
"""

from __future__ import annotations

import re
import string
import tomllib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidationInfo,
    field_validator,
)

from qocr.errors import ConfigError
from qocr.qwen.errors import OptionsError
from qocr.qwen.options import RecognizeOptions
from qocr.s3 import parse_s3_uri
from qocr.scheduler.cache_policy import CachePolicy
from qocr.scheduler.document_options import (
    DEFAULT_DOCUMENT_OPTIONS,
    DocumentOptions,
    DocumentOptionsError,
    document_options,
)
from qocr.scheduler.requests import RequestError, check_batch_mode, check_notify_url
from qocr.scheduler.schema_file import SchemaError, check_schema, read_schema_file
from qocr.scheduler.slots import CronTrigger, EveryTrigger, Trigger, parse_duration
from qocr.scheduler.submit import BatchRequest
from qocr.settings import Settings

DEFAULT_TICK_SECONDS = 30.0
DEFAULT_CATCH_UP = "6h"
DEFAULT_BATCH_NAME = "{schedule} {date} {time}"
TEMPLATE_MAX_WIDTH = 200  # a format spec's width or precision, e.g. {batch:>06}
TEMPLATE_FIELDS = frozenset({"schedule", "date", "time", "slot", "batch"})
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,99}$")


class ScheduleConfigError(ConfigError):
    """The schedules file is missing, unreadable or invalid; the message says where."""

    code = "schedule_config_invalid"


class _BeatFields(BaseModel):
    model_config = ConfigDict(extra="forbid")

    tick_seconds: float = Field(default=DEFAULT_TICK_SECONDS, ge=0.5, le=3600)


class _ScheduleFields(BaseModel):
    """One ``[schedules.NAME]`` table as written; turned into a :class:`Schedule`."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    cron: str | None = None
    every: str | None = None
    timezone: str = "UTC"
    sources: list[str] = Field(min_length=1)
    only_new: bool = True
    catch_up: str = DEFAULT_CATCH_UP
    batch_name: str = DEFAULT_BATCH_NAME
    results_to: str | None = None
    notify: str | None = None
    api: Literal["compatible", "dashscope"] | None = None
    model: str | None = None
    task: str | None = None
    prompt: str | None = None
    schema_: dict[str, Any] | str | None = Field(default=None, alias="schema")
    min_pixels: int | None = Field(default=None, gt=0)
    max_pixels: int | None = Field(default=None, gt=0)
    rotate: bool | None = None
    max_tokens: int | None = Field(default=None, gt=0)
    stream: bool = False
    # Sampling: ranges are checked by RecognizeOptions, as on the command line.
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    repetition_penalty: float | None = None
    presence_penalty: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    s3_mode: Literal["inline", "presign"] | None = None
    # "batch": the provider's Batch API (half price, within 24 h; scheduler/batch_mode.py).
    mode: Literal["realtime", "batch"] = "realtime"
    # The result cache (scheduler.cache_policy): on by default, like `qocr submit`.
    cache: bool = True
    cache_max_age: str | None = None
    cache_urls: bool = False
    # Documents (scheduler.document_options): which pages, at most how many, at what DPI.
    pages: str | None = None
    max_pages: int | None = None
    dpi: float | None = None

    @field_validator("sources", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("sources")
    @classmethod
    def _no_blank_source(cls, value: list[str]) -> list[str]:
        if any(not source.strip() for source in value):
            raise ValueError("a source is empty")
        return [source.strip() for source in value]

    @field_validator("catch_up")
    @classmethod
    def _duration(cls, value: str) -> str:
        parse_duration(value)
        return value

    @field_validator("pages", "max_pages", "dpi")
    @classmethod
    def _document_option(cls, value: Any, info: ValidationInfo) -> Any:
        try:
            document_options(**{str(info.field_name): value})
        except DocumentOptionsError as exc:
            raise ValueError(exc.message) from None
        return value

    @field_validator("cache_max_age")
    @classmethod
    def _max_age(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value)
        return value

    @field_validator("batch_name", "results_to")
    @classmethod
    def _template(cls, value: str | None) -> str | None:
        if value is not None:
            check_template(value)
        return value

    @field_validator("notify")
    @classmethod
    def _webhook(cls, value: str | None) -> str | None:
        if value is None:
            return None
        try:
            return check_notify_url(value)
        except RequestError as exc:
            raise ValueError(exc.message) from None

    @field_validator("results_to")
    @classmethod
    def _s3_key(cls, value: str | None) -> str | None:
        if value is None:
            return None
        location = parse_s3_uri(value)  # a ValueError says what is wrong
        if location.is_prefix:
            raise ValueError("must name an object (s3://bucket/key.jsonl), not a prefix")
        return value


@dataclass(frozen=True)
class Schedule:
    """One validated schedule: when it fires, what it reads, and how it asks the model."""

    name: str
    trigger: Trigger
    timezone: ZoneInfo
    sources: tuple[str, ...]
    options: RecognizeOptions
    api: str
    s3_mode: str
    only_new: bool
    catch_up: timedelta
    batch_name: str
    results_to: str | None
    notify_url: str | None = None
    cache: CachePolicy | None = None  # None: the model's default
    documents: DocumentOptions = DEFAULT_DOCUMENT_OPTIONS
    mode: str = "realtime"

    def due_slot(self, now: datetime) -> datetime | None:
        """The slot to run at ``now``: the latest one, unless it is more than catch_up late.

        Older missed slots are never run on their own: the latest run picks up whatever
        they would have found (with ``only_new``, nothing is read twice either way).
        """
        latest = self.trigger.latest_at_or_before(now)
        if latest is None or now - latest > self.catch_up:
            return None
        return latest

    def request(self, slot: datetime) -> BatchRequest:
        """The batch this schedule makes for ``slot``."""
        return BatchRequest(
            sources=list(self.sources),
            options=self.options,
            api=self.api,
            name=render_template(self.batch_name, self, slot)[:200],
            s3_mode=self.s3_mode,
            schedule_name=self.name,
            scheduled_for=slot,
            notify_url=self.notify_url,
            cache=self.cache,
            documents=self.documents,
            mode=self.mode,
        )

    def results_uri(self, slot: datetime, batch_id: int) -> str | None:
        """Where the batch's results go when it ends, or None."""
        if self.results_to is None:
            return None
        return render_template(self.results_to, self, slot, batch_id)


@dataclass(frozen=True)
class ScheduleBook:
    """Every schedule of one config file, and beat's tick period."""

    schedules: dict[str, Schedule]
    tick_seconds: float = DEFAULT_TICK_SECONDS

    def get(self, name: str) -> Schedule:
        schedule = self.schedules.get(name)
        if schedule is None:
            known = ", ".join(sorted(self.schedules)) or "none"
            raise ScheduleConfigError(
                f"no schedule named {name!r} (configured: {known})", code="schedule_not_found"
            )
        return schedule


def check_template(template: str) -> None:
    """A ValueError names any ``{field}`` outside :data:`TEMPLATE_FIELDS`, a format spec that
    nests a field or is wider than :data:`TEMPLATE_MAX_WIDTH`, or any other that cannot render.

    Checked at load: a ``{date:>999999999}`` would build a gigabyte string at every tick.
    """
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"invalid template: {exc}") from None
    for _, field_name, spec, _ in parsed:
        if field_name is None:
            continue
        if field_name not in TEMPLATE_FIELDS:
            known = ", ".join("{" + name + "}" for name in sorted(TEMPLATE_FIELDS))
            raise ValueError(f"unknown field {{{field_name}}} (use {known})")
        numbers = re.findall(r"\d+", spec or "")
        if "{" in (spec or "") or any(len(n) > 4 or int(n) > TEMPLATE_MAX_WIDTH for n in numbers):
            raise ValueError(
                f"the format spec of {{{field_name}}} nests a field or is wider than "
                f"{TEMPLATE_MAX_WIDTH} characters"
            )
    try:
        template.format(**dict.fromkeys(TEMPLATE_FIELDS, ""))
    except (ValueError, TypeError) as exc:
        raise ValueError(f"invalid template: {exc}") from None


def render_template(
    template: str, schedule: Schedule, slot: datetime, batch_id: int | None = None
) -> str:
    """Fill ``{schedule}``, ``{date}`` and ``{time}`` (the slot in the schedule's time zone),
    ``{slot}`` (UTC, e.g. 20261125T010000Z) and ``{batch}``."""
    local = slot.astimezone(schedule.timezone)
    return template.format(
        schedule=schedule.name,
        date=local.strftime("%Y-%m-%d"),
        time=local.strftime("%H%M%S"),
        slot=slot.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ"),
        batch="" if batch_id is None else str(batch_id),
    )


def load_schedule_book(path: Path | str, settings: Settings) -> ScheduleBook:
    """Read and validate the config file at ``path``."""
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8-sig"))  # a BOM is fine
    except FileNotFoundError:
        raise ScheduleConfigError(
            f"{path}: no such config file (set QOCR_CONFIG)", code="schedule_config_not_found"
        ) from None
    except OSError as exc:
        raise ScheduleConfigError(f"{path}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ScheduleConfigError(f"{path}: not UTF-8 text") from None
    except tomllib.TOMLDecodeError as exc:
        raise ScheduleConfigError(f"{path}: invalid TOML: {exc}") from None
    except RecursionError:
        raise ScheduleConfigError(f"{path}: invalid TOML: nested too deeply") from None
    return parse_schedule_book(data, settings, base_dir=path.parent, where=str(path))


def parse_schedule_book(
    data: dict[str, Any], settings: Settings, base_dir: Path, where: str
) -> ScheduleBook:
    """Validate a parsed TOML document; file paths inside it are relative to ``base_dir``."""
    try:
        beat = _BeatFields.model_validate(data.get("beat", {}))
    except ValidationError as exc:
        raise ScheduleConfigError(_describe(exc, f"{where}: [beat]")) from None
    tables = data.get("schedules", {})
    if not isinstance(tables, dict):
        raise ScheduleConfigError(f"{where}: 'schedules' must be a table of [schedules.NAME]")
    schedules = {
        name: _build(name, fields, settings, base_dir, f"{where}: schedule {name!r}")
        for name, fields in tables.items()
    }
    return ScheduleBook(schedules=schedules, tick_seconds=beat.tick_seconds)


def _build(name: str, raw: Any, settings: Settings, base_dir: Path, where: str) -> Schedule:
    if not _NAME.match(name):
        raise ScheduleConfigError(
            f"{where}: a name is 1-100 letters, digits, '.', '_' or '-', starting with a "
            "letter or digit"
        )
    if not isinstance(raw, dict):
        raise ScheduleConfigError(f"{where}: must be a table")
    try:
        fields = _ScheduleFields.model_validate(raw)
    except ValidationError as exc:
        raise ScheduleConfigError(_describe(exc, where)) from None
    timezone = _zone(fields.timezone, where)
    options = _options(fields, settings, base_dir, where)
    if fields.mode == "batch":
        try:
            check_batch_mode(fields.api or settings.api, settings.region, options)
        except RequestError as exc:
            raise ScheduleConfigError(f"{where}: {exc.message}") from None
    return Schedule(
        name=name,
        trigger=_trigger(fields, timezone, where),
        timezone=timezone,
        sources=tuple(fields.sources),
        options=options,
        api=fields.api or settings.api,
        s3_mode=fields.s3_mode or settings.s3_mode,
        only_new=fields.only_new,
        catch_up=parse_duration(fields.catch_up),
        batch_name=fields.batch_name,
        results_to=fields.results_to,
        notify_url=fields.notify,
        cache=CachePolicy.for_model(
            fields.model or settings.model,
            enabled=fields.cache,
            max_age_seconds=None
            if fields.cache_max_age is None
            else int(parse_duration(fields.cache_max_age).total_seconds()),
            urls=fields.cache_urls,
        ),
        documents=document_options(fields.pages, fields.max_pages, fields.dpi),
        mode=fields.mode,
    )


def _describe(exc: ValidationError, where: str) -> str:
    problems = []
    for error in exc.errors():
        field = ".".join(str(part) for part in error["loc"]) or "(table)"
        message = str(error["msg"]).removeprefix("Value error, ")
        if error["type"] == "extra_forbidden":
            message = "unknown key"
        # The input value is left out: a prompt or a URL may hold something private.
        problems.append(f"{where}: {field}: {message}")
    return "; ".join(problems)


def _zone(name: str, where: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ScheduleConfigError(
            f"{where}: timezone: unknown time zone {name!r} (use an IANA name like Europe/Paris)"
        ) from None


def _trigger(fields: _ScheduleFields, timezone: ZoneInfo, where: str) -> Trigger:
    if (fields.cron is None) == (fields.every is None):
        raise ScheduleConfigError(f"{where}: set exactly one of 'cron' or 'every'")
    try:
        if fields.cron is not None:
            return CronTrigger.parse(fields.cron, timezone)
        assert fields.every is not None
        return EveryTrigger.parse(fields.every)
    except ValueError as exc:
        key = "cron" if fields.cron is not None else "every"
        raise ScheduleConfigError(f"{where}: {key}: {exc}") from None


def _options(
    fields: _ScheduleFields, settings: Settings, base_dir: Path, where: str
) -> RecognizeOptions:
    schema = _schema(fields.schema_, base_dir, where)
    task = fields.task
    if schema is not None and task is None:
        task = "key_information_extraction"
    try:
        return RecognizeOptions(
            model=fields.model or settings.model,
            task=task,  # type: ignore[arg-type]  # checked by RecognizeOptions itself
            prompt=fields.prompt,
            result_schema=schema,
            min_pixels=fields.min_pixels,
            max_pixels=fields.max_pixels,
            enable_rotate=fields.rotate,
            max_tokens=fields.max_tokens,
            stream=fields.stream,
            granted_max_tokens=settings.granted_max_tokens,
            temperature=fields.temperature,
            top_p=fields.top_p,
            top_k=fields.top_k,
            repetition_penalty=fields.repetition_penalty,
            presence_penalty=fields.presence_penalty,
            seed=fields.seed,
            stop=tuple(fields.stop) if isinstance(fields.stop, list) else fields.stop,
        )
    except OptionsError as exc:
        raise ScheduleConfigError(f"{where}: {exc.message}") from None


def _schema(
    value: dict[str, Any] | str | None, base_dir: Path, where: str
) -> dict[str, Any] | None:
    if value is None:
        return None
    if isinstance(value, dict):
        if value == {}:
            raise ScheduleConfigError(f"{where}: schema: must not be empty")
        try:
            return check_schema(value)
        except SchemaError as exc:
            raise ScheduleConfigError(f"{where}: schema: {exc.message}") from None
    path = Path(value)
    if not path.is_absolute():
        path = base_dir / path
    try:
        return read_schema_file(path)
    except SchemaError as exc:
        raise ScheduleConfigError(f"{where}: schema: {path}: {exc.message}") from None
