"""Scheduled runs over moto's S3 server, on SQLite and PostgreSQL.

A run makes one batch of the objects not done yet (key + ETag), nothing when nothing is
new, and one batch per slot however many ticks or threads ask for it.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select

from qocr.models.base import utcnow
from qocr.models.entities import Batch, Item
from qocr.models.records import AttemptRecord, ResultRecord, SourceRow
from qocr.models.schedule_run import RunOutcome, ScheduleRun
from qocr.models.schedule_sources import ScheduleSource
from qocr.models.states import AttemptOutcome, BatchState, ItemState
from qocr.models.store import Store
from qocr.s3 import make_s3_client
from qocr.scheduler.runs import MAX_RUN_ATTEMPTS, RETRY_AFTER, RunReport, ScheduleRunner
from qocr.scheduler.schedules import Schedule, ScheduleBook, parse_schedule_book
from qocr.scheduler.tick import make_runner
from qocr.settings import Settings

SLOT = datetime(2026, 11, 25, 1, 0, tzinfo=UTC)
PNG = Path(__file__).resolve().parents[2] / "samples" / "invoice-1.png"


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


class NoLocks:
    """Every lock is free: only the database's UNIQUE constraints are left to protect."""

    @contextmanager
    def hold(self, name: str) -> Iterator[bool]:
        yield True


@pytest.fixture
def settings(database_url: str, s3_endpoint: str) -> Settings:
    return Settings(database_url=database_url, s3_endpoint_url=s3_endpoint, DASHSCOPE_API_KEY=None)


@pytest.fixture
def s3(s3_endpoint: str) -> Any:
    return make_s3_client(s3_endpoint)


def put(s3: Any, bucket: str, key: str, body: bytes | None = None) -> str:
    """Upload an object; returns its ETag (unquoted), the fingerprint a run records."""
    data = body if body is not None else PNG.read_bytes() + uuid.uuid4().bytes
    return str(s3.put_object(Bucket=bucket, Key=key, Body=data)["ETag"]).strip('"')


def book_of(bucket: str, **extra: str) -> ScheduleBook:
    lines = [
        "[schedules.nightly]",
        'cron = "0 2 * * *"',
        'timezone = "Europe/Paris"',
        f'sources = ["s3://{bucket}/scans/"]',
        *(f"{key} = {value}" for key, value in extra.items()),
    ]
    import tomllib

    return parse_schedule_book(
        tomllib.loads("\n".join(lines)), Settings(), base_dir=Path("."), where="test.toml"
    )


def runner_for(
    engine: Engine, settings: Settings, clock: Clock | None = None, locks: Any = None
) -> tuple[ScheduleRunner, list[int]]:
    published: list[int] = []
    runner = make_runner(Store(engine), settings, published.append)
    if clock is not None:
        runner._clock = clock
    if locks is not None:
        runner.locks = locks
    return runner, published


def batches(engine: Engine) -> list[Batch]:
    with Store(engine).sessions() as session:
        return list(session.scalars(select(Batch).order_by(Batch.id)))


def items_of(engine: Engine, batch_id: int) -> dict[str, str | None]:
    with Store(engine).sessions() as session:
        rows = session.execute(
            select(Item.source, Item.fingerprint).where(Item.batch_id == batch_id)
        )
        return {row.source: row.fingerprint for row in rows}


def runs(engine: Engine) -> list[ScheduleRun]:
    with Store(engine).sessions() as session:
        return list(session.scalars(select(ScheduleRun).order_by(ScheduleRun.scheduled_for)))


def run_nightly(runner: ScheduleRunner, schedule: Schedule, slot: datetime) -> RunReport:
    return runner.run_slot(schedule, slot)


def finish_items(engine: Engine, batch_id: int, state: ItemState, text: str = "ok") -> None:
    """Take every queued item of the batch through a worker's claim to ``state``."""
    store = Store(engine)
    with store.sessions() as session:
        ids = list(session.scalars(select(Item.id).where(Item.batch_id == batch_id)))
    now = utcnow()
    attempt = AttemptRecord(started_at=now, ended_at=now, outcome=AttemptOutcome.SUCCEEDED)
    for item_id in ids:
        claimed = store.claim(item_id, uuid.uuid4().hex, now + timedelta(minutes=1))
        assert claimed is not None
        if state is ItemState.SUCCEEDED:
            assert store.succeed(claimed, attempt, ResultRecord(text=f"{text} {claimed.source}"))
        else:
            assert store.fail(claimed, "image_invalid", "not an image")


def test_a_run_takes_the_prefix_then_finds_nothing_new(
    engine: Engine, settings: Settings, s3: Any, s3_bucket: str
) -> None:
    etags = {f"s3://{s3_bucket}/scans/{n}.png": put(s3, s3_bucket, f"scans/{n}.png") for n in "abc"}
    put(s3, s3_bucket, "scans/notes.txt", b"not an image")
    put(s3, s3_bucket, "elsewhere/d.png")
    schedule = book_of(s3_bucket).get("nightly")
    runner, published = runner_for(engine, settings)

    first = run_nightly(runner, schedule, SLOT)
    assert (first.outcome, first.new_items, first.ran) == (RunOutcome.BATCH_CREATED, 3, True)
    [batch] = batches(engine)
    assert (batch.id, batch.schedule_name, batch.scheduled_for) == (first.batch_id, "nightly", SLOT)
    assert (batch.total_items, batch.state, batch.name) == (
        3,
        BatchState.RUNNING,
        "nightly 2026-11-25 020000",
    )
    assert items_of(engine, batch.id) == etags
    assert published == [batch.id]

    second = run_nightly(runner, schedule, SLOT + timedelta(days=1))
    assert (second.outcome, second.batch_id, second.new_items) == (RunOutcome.NOTHING_NEW, None, 0)
    assert len(batches(engine)) == 1  # no empty batch
    recorded = runs(engine)
    assert [(r.outcome, r.batch_id, r.new_items, r.triggered_by) for r in recorded] == [
        (RunOutcome.BATCH_CREATED, batch.id, 3, "beat"),
        (RunOutcome.NOTHING_NEW, None, 0, "beat"),
    ]
    assert all(r.finished_at is not None and r.finished_at >= r.started_at for r in recorded)
    assert published == [batch.id]


def test_two_new_objects_and_one_changed_make_a_batch_of_exactly_three(
    engine: Engine, settings: Settings, s3: Any, s3_bucket: str
) -> None:
    for name in "abcd":
        put(s3, s3_bucket, f"scans/{name}.png")
    schedule = book_of(s3_bucket).get("nightly")
    runner, _ = runner_for(engine, settings)
    first = run_nightly(runner, schedule, SLOT)
    assert first.new_items == 4
    # Half of the first batch is done, half still waits: both count as done already.
    finish_items(engine, first.batch_id or 0, ItemState.SUCCEEDED)

    changed = put(s3, s3_bucket, "scans/b.png")  # new content, new ETag
    new = {f"s3://{s3_bucket}/scans/{n}.png": put(s3, s3_bucket, f"scans/{n}.png") for n in "xy"}
    second = run_nightly(runner, schedule, SLOT + timedelta(days=1))
    assert (second.outcome, second.new_items) == (RunOutcome.BATCH_CREATED, 3)
    assert items_of(engine, second.batch_id or 0) == {
        **new,
        f"s3://{s3_bucket}/scans/b.png": changed,
    }
    third = run_nightly(runner, schedule, SLOT + timedelta(days=2))
    assert third.outcome is RunOutcome.NOTHING_NEW


def test_queued_items_count_as_done_but_failed_ones_are_tried_again(
    engine: Engine, settings: Settings, s3: Any, s3_bucket: str
) -> None:
    for name in "ab":
        put(s3, s3_bucket, f"scans/{name}.png")
    schedule = book_of(s3_bucket).get("nightly")
    runner, _ = runner_for(engine, settings)
    first = run_nightly(runner, schedule, SLOT)
    # The first batch is still queued (an overlap with the next night): nothing is new.
    assert run_nightly(runner, schedule, SLOT + timedelta(days=1)).outcome is RunOutcome.NOTHING_NEW
    finish_items(engine, first.batch_id or 0, ItemState.FAILED)
    retried = run_nightly(runner, schedule, SLOT + timedelta(days=2))
    assert (retried.outcome, retried.new_items) == (RunOutcome.BATCH_CREATED, 2)


def finish_item(engine: Engine, batch_id: int, source: str, state: ItemState) -> None:
    """Take one queued item of the batch, by source, through a worker's claim to ``state``."""
    store = Store(engine)
    with store.sessions() as session:
        item_id = session.scalar(
            select(Item.id).where(Item.batch_id == batch_id, Item.source == source)
        )
    assert item_id is not None
    now = utcnow()
    claimed = store.claim(item_id, uuid.uuid4().hex, now + timedelta(minutes=1))
    assert claimed is not None
    if state is ItemState.SUCCEEDED:
        attempt = AttemptRecord(started_at=now, ended_at=now, outcome=AttemptOutcome.SUCCEEDED)
        assert store.succeed(claimed, attempt, ResultRecord(text="ok"))
    else:
        assert store.fail(claimed, "image_invalid", "not an image")


def recorded_sources(engine: Engine) -> list[tuple[str, str, int]]:
    """The only_new registry: (schedule, source, batch) of every row, by item id."""
    with Store(engine).sessions() as session:
        rows = session.execute(
            select(ScheduleSource.schedule_name, Item.source, Item.batch_id)
            .join(Item, Item.id == ScheduleSource.item_id)
            .where(Item.source_sha256 == ScheduleSource.source_sha256)
            .order_by(Item.id)
        )
        return [(name, source, batch_id) for name, source, batch_id in rows]


def test_a_failed_source_is_submitted_again_and_a_succeeded_one_is_skipped(
    engine: Engine, settings: Settings, s3: Any, s3_bucket: str
) -> None:
    for name in "ab":
        put(s3, s3_bucket, f"scans/{name}.png")
    a, b = (f"s3://{s3_bucket}/scans/{name}.png" for name in "ab")
    schedule = book_of(s3_bucket).get("nightly")
    runner, _ = runner_for(engine, settings)
    first = run_nightly(runner, schedule, SLOT)
    assert first.batch_id is not None and first.new_items == 2
    finish_item(engine, first.batch_id, a, ItemState.SUCCEEDED)
    finish_item(engine, first.batch_id, b, ItemState.FAILED)

    second = run_nightly(runner, schedule, SLOT + timedelta(days=1))
    assert (second.outcome, second.new_items) == (RunOutcome.BATCH_CREATED, 1)
    assert second.batch_id is not None
    assert set(items_of(engine, second.batch_id)) == {b}
    # Each item made for a source is in the registry: b's failed one and its new one.
    assert recorded_sources(engine) == [
        ("nightly", a, first.batch_id),
        ("nightly", b, first.batch_id),
        ("nightly", b, second.batch_id),
    ]
    # b's new item is queued: it counts as done, and so does a.
    third = run_nightly(runner, schedule, SLOT + timedelta(days=2))
    assert third.outcome is RunOutcome.NOTHING_NEW


def test_runs_without_only_new_record_no_sources(
    engine: Engine, settings: Settings, s3: Any, s3_bucket: str
) -> None:
    put(s3, s3_bucket, "scans/a.png")
    schedule = book_of(s3_bucket, only_new="false").get("nightly")
    runner, _ = runner_for(engine, settings)
    assert run_nightly(runner, schedule, SLOT).new_items == 1
    assert recorded_sources(engine) == []


def test_only_new_false_takes_every_object_each_run(
    engine: Engine, settings: Settings, s3: Any, s3_bucket: str
) -> None:
    for name in "ab":
        put(s3, s3_bucket, f"scans/{name}.png")
    schedule = book_of(s3_bucket, only_new="false").get("nightly")
    runner, _ = runner_for(engine, settings)
    assert run_nightly(runner, schedule, SLOT).new_items == 2
    assert run_nightly(runner, schedule, SLOT + timedelta(days=1)).new_items == 2
    assert [b.total_items for b in batches(engine)] == [2, 2]


def test_other_schedules_do_not_count(
    engine: Engine, settings: Settings, s3: Any, s3_bucket: str
) -> None:
    put(s3, s3_bucket, "scans/a.png")
    runner, _ = runner_for(engine, settings)
    nightly = book_of(s3_bucket).get("nightly")
    assert run_nightly(runner, nightly, SLOT).new_items == 1
    other = Schedule(**{**nightly.__dict__, "name": "weekly"})
    assert run_nightly(runner, other, SLOT).new_items == 1


def test_the_same_slot_ticked_again_gives_one_batch(
    engine: Engine, settings: Settings, s3: Any, s3_bucket: str
) -> None:
    put(s3, s3_bucket, "scans/a.png")
    book = book_of(s3_bucket)
    runner, published = runner_for(engine, settings)
    now = SLOT + timedelta(minutes=1)
    [first] = runner.tick(book, now)
    [again] = runner.tick(book, now + timedelta(seconds=30))
    assert (first.ran, first.outcome) == (True, RunOutcome.BATCH_CREATED)
    assert (again.ran, again.outcome, again.batch_id) == (
        False,
        RunOutcome.BATCH_CREATED,
        first.batch_id,
    )
    assert len(batches(engine)) == 1 and len(runs(engine)) == 1
    assert published == [first.batch_id]
    # Before the slot and long after it (beyond catch_up), the tick runs nothing.
    assert runner.tick(book, SLOT - timedelta(seconds=1)) == []
    assert runner.tick(book, SLOT + timedelta(hours=7)) == []


@pytest.mark.parametrize("locks", ["real", "none"])
def test_concurrent_ticks_for_one_slot_give_one_batch(
    engine: Engine, settings: Settings, s3: Any, s3_bucket: str, locks: str
) -> None:
    """Two beats by mistake: eight ticks at once, with the lock and with only UNIQUE left."""
    for name in "abc":
        put(s3, s3_bucket, f"scans/{name}.png")
    book = book_of(s3_bucket)
    now = SLOT + timedelta(minutes=1)
    barrier = threading.Barrier(8)
    reports: list[RunReport] = []
    errors: list[BaseException] = []
    guard = threading.Lock()

    def tick() -> None:
        runner, _ = runner_for(engine, settings, locks=NoLocks() if locks == "none" else None)
        try:
            barrier.wait(10)
            found = runner.tick(book, now)
        except BaseException as exc:
            with guard:
                errors.append(exc)
            return
        with guard:
            reports.extend(found)

    threads = [threading.Thread(target=tick) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    [batch] = batches(engine)
    assert batch.total_items == 3
    assert all(r.batch_id in (None, batch.id) for r in reports)
    if locks == "none":
        # Without the lock only UNIQUE(schedule_name, scheduled_for) is left: it still
        # allows one batch, though the run row's bookkeeping may be off (runs that trip
        # over each other take each other for dead).
        return
    [run] = runs(engine)
    assert (run.outcome, run.batch_id, run.new_items) == (RunOutcome.BATCH_CREATED, batch.id, 3)
    assert sum(1 for r in reports if r.ran and r.batch_id == batch.id) >= 1


def test_a_run_that_died_after_its_batch_adopts_it(
    engine: Engine, settings: Settings, s3: Any, s3_bucket: str
) -> None:
    put(s3, s3_bucket, "scans/a.png")
    schedule = book_of(s3_bucket).get("nightly")
    runner, _ = runner_for(engine, settings)
    # As if a worker died between committing the batch and finishing its run row.
    runner.runs.start("nightly", SLOT, "beat", utcnow())
    row = SourceRow(source=f"s3://{s3_bucket}/scans/a.png", fingerprint="etag")
    batch_id, _ = Store(engine).create_batch(schedule.request(SLOT).spec(), [row])
    report = run_nightly(runner, schedule, SLOT)
    assert (report.outcome, report.batch_id, report.ran) == (
        RunOutcome.BATCH_CREATED,
        batch_id,
        True,
    )
    [run] = runs(engine)
    assert (run.attempts, run.batch_id) == (2, batch_id)
    assert len(batches(engine)) == 1


def test_a_run_interrupted_too_often_is_given_up(
    engine: Engine, settings: Settings, s3: Any, s3_bucket: str
) -> None:
    put(s3, s3_bucket, "scans/a.png")
    schedule = book_of(s3_bucket).get("nightly")
    runner, _ = runner_for(engine, settings)
    for _ in range(MAX_RUN_ATTEMPTS):  # started, and the worker died, three times
        runner.runs.start("nightly", SLOT, "beat", utcnow())
    report = run_nightly(runner, schedule, SLOT)
    assert (report.ran, report.outcome, report.error_code) == (
        False,
        RunOutcome.FAILED,
        "run_interrupted",
    )
    assert batches(engine) == []
    # The next slot is a new run, and it finds the file.
    assert run_nightly(runner, schedule, SLOT + timedelta(days=1)).new_items == 1


def test_a_failed_run_is_recorded_and_retried_a_few_times(
    engine: Engine, settings: Settings, s3: Any, s3_bucket: str
) -> None:
    schedule = book_of(f"{s3_bucket}-missing").get("nightly")
    clock = Clock(SLOT + timedelta(minutes=1))
    runner, _ = runner_for(engine, settings, clock=clock)
    failed = run_nightly(runner, schedule, SLOT)
    assert (failed.outcome, failed.error_code, failed.ran) == (
        RunOutcome.FAILED,
        "source_bucket_not_found",
        True,
    )
    assert f"no such S3 bucket: {s3_bucket}-missing" in (failed.error_message or "")
    # Not again at once...
    assert run_nightly(runner, schedule, SLOT).ran is False
    # ...but after RETRY_AFTER, up to MAX_RUN_ATTEMPTS in all.
    for attempt in range(2, MAX_RUN_ATTEMPTS + 1):
        clock.now += RETRY_AFTER
        report = run_nightly(runner, schedule, SLOT)
        assert (report.ran, report.outcome) == (True, RunOutcome.FAILED)
        assert runs(engine)[0].attempts == attempt
    clock.now += RETRY_AFTER * 10
    assert run_nightly(runner, schedule, SLOT).ran is False
    assert batches(engine) == []


def test_results_are_exported_once_the_batch_ends(
    engine: Engine, settings: Settings, s3: Any, s3_bucket: str
) -> None:
    for name in "ab":
        put(s3, s3_bucket, f"scans/{name}.png")
    book = book_of(s3_bucket, results_to=f'"s3://{s3_bucket}/exports/{{schedule}}-{{date}}.jsonl"')
    runner, _ = runner_for(engine, settings)
    [report] = runner.tick(book, SLOT + timedelta(minutes=1))
    key = "exports/nightly-2026-11-25.jsonl"
    [run] = runs(engine)
    assert (run.export_uri, run.exported_at) == (f"s3://{s3_bucket}/{key}", None)

    assert runner.export_finished() == 0  # still running
    finish_items(engine, report.batch_id or 0, ItemState.SUCCEEDED, text="TOTAL 42")
    assert Store(engine).complete_finished_batches() == [report.batch_id]
    assert runner.export_finished() == 1
    body = s3.get_object(Bucket=s3_bucket, Key=key)["Body"].read().decode()
    lines = [json.loads(line) for line in body.splitlines()]
    assert [(line["source"], line["state"]) for line in lines] == [
        (f"s3://{s3_bucket}/scans/a.png", "succeeded"),
        (f"s3://{s3_bucket}/scans/b.png", "succeeded"),
    ]
    assert lines[0]["text"] == f"TOTAL 42 s3://{s3_bucket}/scans/a.png"
    assert lines[0]["batch_id"] == report.batch_id
    [run] = runs(engine)
    assert run.exported_at is not None and run.export_attempts == 1
    assert runner.export_finished() == 0  # once


def test_a_failed_export_is_recorded_and_retried(
    engine: Engine, settings: Settings, s3: Any, s3_bucket: str
) -> None:
    put(s3, s3_bucket, "scans/a.png")
    book = book_of(s3_bucket, results_to='"s3://no-such-export-bucket/x.jsonl"')
    runner, _ = runner_for(engine, settings)
    [report] = runner.tick(book, SLOT + timedelta(minutes=1))
    finish_items(engine, report.batch_id or 0, ItemState.SUCCEEDED)
    Store(engine).complete_finished_batches()
    assert runner.export_finished() == 0
    [run] = runs(engine)
    assert (run.exported_at, run.export_attempts) == (None, 1)
    assert run.export_error == "S3 said NoSuchBucket"
    s3.create_bucket(Bucket="no-such-export-bucket")
    try:
        assert runner.export_finished() == 1
        assert len(s3.get_object(Bucket="no-such-export-bucket", Key="x.jsonl")["Body"].read()) > 0
    finally:
        s3.delete_object(Bucket="no-such-export-bucket", Key="x.jsonl")
        s3.delete_bucket(Bucket="no-such-export-bucket")


def test_the_schedule_lock_is_exclusive_per_name(engine: Engine) -> None:
    from qocr.scheduler.locks import schedule_locks

    locks = schedule_locks(engine)
    other = schedule_locks(engine)
    with locks.hold("nightly") as first:
        assert first is True
        with other.hold("nightly") as second, other.hold("weekly") as third:
            assert (second, third) == (False, True)
    with other.hold("nightly") as again:
        assert again is True
