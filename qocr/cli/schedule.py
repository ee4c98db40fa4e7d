"""``qocr beat`` and ``qocr schedule``: scheduled runs from the config file (QOCR_CONFIG)."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

import click
from sqlalchemy import inspect

from qocr.errors import ConfigError, QocrError
from qocr.models.base import utcnow
from qocr.models.schedule_run import ScheduleRun, ScheduleRunStore
from qocr.models.store import Store
from qocr.scheduler.schedules import Schedule, ScheduleBook, load_schedule_book
from qocr.scheduler.submit import open_store
from qocr.settings import Settings, get_settings

DEFAULT_WAIT_SECONDS = 60.0


@click.command()
@click.option(
    "--tick",
    "tick_seconds",
    type=click.FloatRange(min=0.5, max=3600),
    help="Seconds between ticks (default: [beat] tick_seconds in the config, else 30).",
)
def beat(tick_seconds: float | None) -> None:
    """Send the schedule tick to the workers; run exactly one beat per deployment.

    The workers (`qocr worker`) run each tick: they read the same config file, create the
    due batches and export finished ones. A duplicated or missed tick is harmless.
    """
    from qocr.worker.app import create_app
    from qocr.worker.beat import run_beat

    settings = get_settings()
    book = load_schedule_book(settings.config, settings)
    tick = tick_seconds or book.tick_seconds
    click.echo(f"qocr beat: {len(book.schedules)} schedule(s) from {settings.config}")
    now = utcnow()
    for schedule in book.schedules.values():
        click.echo(f"  {schedule.name}: {schedule.trigger.describe()}, next {_next(schedule, now)}")
    click.echo(f"  tick every {tick:g} s")
    run_beat(create_app(settings), tick, settings.log_level)


@click.group()
def schedule() -> None:
    """Scheduled runs: list them, or run one now (config file: QOCR_CONFIG)."""


@schedule.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def list_schedules(as_json: bool) -> None:
    """Show each schedule with its next run and its last run."""
    settings = get_settings()
    book = load_schedule_book(settings.config, settings)
    store = _open_store(settings)
    try:
        last = ScheduleRunStore(store.engine).last_runs(list(book.schedules))
    finally:
        store.engine.dispose()
    now = utcnow()
    entries = [_entry(schedule, last.get(name), now) for name, schedule in _sorted(book)]
    if as_json:
        click.echo(json.dumps({"schedules": entries}, indent=2))
        return
    _print_table(book, entries)


@schedule.command("run")
@click.argument("name")
@click.option(
    "--wait",
    type=click.FloatRange(min=0),
    default=DEFAULT_WAIT_SECONDS,
    show_default=True,
    help="Seconds to wait while another process runs this schedule.",
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def run_schedule(name: str, wait: float, as_json: bool) -> None:
    """Run schedule NAME now (its slot is the current time), as the tick would."""
    from qocr.scheduler.runs import MANUAL
    from qocr.scheduler.tick import make_runner
    from qocr.worker.app import create_app
    from qocr.worker.publish import publish_now

    settings = get_settings()
    book = load_schedule_book(settings.config, settings)
    chosen = book.get(name)
    store = _open_store(settings)
    app = create_app(settings)

    def publish(_batch_id: int) -> None:
        publish_now(app, settings, store)

    try:
        report = make_runner(store, settings, publish).run_slot(chosen, utcnow(), MANUAL, wait=wait)
    finally:
        store.engine.dispose()
    if report.outcome is None:
        raise QocrError(
            f"schedule {name!r} is being run by another process; try again later",
            code="schedule_busy",
        )
    result = {
        "schedule": name,
        "slot": _iso(report.slot),
        "outcome": report.outcome.value,
        "batch_id": report.batch_id,
        "new_items": report.new_items,
        "error_code": report.error_code,
        "error_message": report.error_message,
    }
    if as_json:
        click.echo(json.dumps(result))
    elif report.batch_id is not None:
        click.echo(f"schedule {name}: batch {report.batch_id}: {report.new_items} new items queued")
    elif report.error_code is None:
        click.echo(f"schedule {name}: nothing new (no batch created)")
    else:
        click.echo(f"schedule {name}: failed: {report.error_message}", err=True)
    if report.error_code is not None:
        raise SystemExit(1)


def _open_store(settings: Settings) -> Store:
    store = open_store(settings)
    if not inspect(store.engine).has_table(ScheduleRun.__tablename__):
        store.engine.dispose()
        raise ConfigError("the database has no schedule_runs table: run `qocr db upgrade`")
    return store


def _sorted(book: ScheduleBook) -> list[tuple[str, Schedule]]:
    return sorted(book.schedules.items())


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat()


def _next(schedule: Schedule, now: datetime) -> str:
    upcoming = schedule.trigger.next_after(now)
    if upcoming is None:
        return "never"
    return upcoming.astimezone(schedule.timezone).isoformat(timespec="seconds")


def _entry(schedule: Schedule, last: ScheduleRun | None, now: datetime) -> dict[str, Any]:
    return {
        "name": schedule.name,
        "trigger": schedule.trigger.describe(),
        "timezone": schedule.timezone.key,
        "sources": list(schedule.sources),
        "only_new": schedule.only_new,
        "results_to": schedule.results_to,
        "next_run": _iso(schedule.trigger.next_after(now)),
        "last_run": None if last is None else _run_entry(last),
    }


def _run_entry(run: ScheduleRun) -> dict[str, Any]:
    return {
        "slot": _iso(run.scheduled_for),
        "triggered_by": run.triggered_by,
        "outcome": run.outcome.value,
        "batch_id": run.batch_id,
        "new_items": run.new_items,
        "attempts": run.attempts,
        "started_at": _iso(run.started_at),
        "finished_at": _iso(run.finished_at),
        "error_code": run.error_code,
        "export_uri": run.export_uri,
        "exported_at": _iso(run.exported_at),
    }


def _print_table(book: ScheduleBook, entries: list[dict[str, Any]]) -> None:
    from rich.console import Console
    from rich.table import Table

    table = Table("schedule", "when", "next run", "last run")
    for entry in entries:
        schedule = book.schedules[entry["name"]]
        upcoming = "never"
        if entry["next_run"] is not None:
            upcoming = _local(entry["next_run"], schedule)
        table.add_row(entry["name"], entry["trigger"], upcoming, _last_text(entry, schedule))
    if not entries:
        click.echo("no schedules configured")
        return
    Console().print(table)


def _local(iso: str, schedule: Schedule) -> str:
    return datetime.fromisoformat(iso).astimezone(schedule.timezone).strftime("%Y-%m-%d %H:%M:%S")


def _last_text(entry: dict[str, Any], schedule: Schedule) -> str:
    last = entry["last_run"]
    if last is None:
        return "never"
    text = f"{_local(last['slot'], schedule)} {last['outcome']}"
    if last["batch_id"] is not None:
        text += f" (batch {last['batch_id']}, {last['new_items']} new)"
    if last["error_code"]:
        text += f" [{last['error_code']}]"
    if last["exported_at"]:
        text += ", exported"
    return text
