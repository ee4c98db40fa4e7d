"""`qocr schedule run` / `qocr schedule list` and the tick task, on moto S3, SQL and Redis."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner, Result
from sqlalchemy import Engine, select

from qocr.cli import cli
from qocr.models.entities import Batch, Item
from qocr.models.schedule_run import RunOutcome, ScheduleRun
from qocr.models.store import Store
from qocr.s3 import make_s3_client
from qocr.scheduler.fleet_lock import LOCK_KEY, FleetLock
from qocr.settings import get_settings, load_settings
from qocr.worker.app import create_app
from qocr.worker.queues import TICK_TASK

PNG = Path(__file__).resolve().parents[2] / "samples" / "invoice-2.png"
SECRET = "sk-schedule-test-0123456789"


@pytest.fixture
def configured(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    database_url: str,
    redis_url: str,
    s3_endpoint: str,
    s3_bucket: str,
) -> Iterator[Path]:
    """A config file with two schedules, and the environment that points at it."""
    config = tmp_path / "qocr.toml"
    config.write_text(
        f"""
[schedules.nightly]
cron = "0 2 * * *"
timezone = "Asia/Shanghai"
sources = ["s3://{s3_bucket}/in/"]
results_to = "s3://{s3_bucket}/out/{{date}}.jsonl"

[schedules.broken]
every = "1h"
sources = ["s3://{s3_bucket}-absent/in/"]
""",
        encoding="utf-8",
    )
    monkeypatch.chdir(tmp_path)
    for name, value in {
        "QOCR_CONFIG": str(config),
        "QOCR_DATABASE_URL": database_url,
        "QOCR_BROKER_URL": redis_url,
        "QOCR_S3_ENDPOINT_URL": s3_endpoint,
        "DASHSCOPE_API_KEY": SECRET,
    }.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield config
    get_settings.cache_clear()


def invoke(*args: str) -> Result:
    return CliRunner().invoke(cli, list(args))


def put_images(s3_endpoint: str, bucket: str, *names: str) -> None:
    client = make_s3_client(s3_endpoint)
    for name in names:
        client.put_object(Bucket=bucket, Key=f"in/{name}", Body=PNG.read_bytes() + name.encode())


def test_schedule_run_creates_and_dispatches_then_finds_nothing_new(
    configured: Path, engine: Engine, redis_url: str, s3_endpoint: str, s3_bucket: str
) -> None:
    put_images(s3_endpoint, s3_bucket, "a.png", "b.png")
    first = invoke("schedule", "run", "nightly", "--json")
    assert first.exit_code == 0, first.output
    report = json.loads(first.output)
    assert (report["outcome"], report["new_items"]) == ("batch_created", 2)
    with Store(engine).sessions() as session:
        batch = session.scalars(select(Batch)).one()
        run = session.scalars(select(ScheduleRun)).one()
        # Published at once: a failed publish would have cleared dispatched_at again. (The
        # broker's queue is not read here: other test runs may share this Redis database.)
        dispatched = session.scalars(select(Item.dispatched_at)).all()
    assert len(dispatched) == 2 and None not in dispatched
    assert (batch.id, batch.schedule_name, batch.total_items) == (report["batch_id"], "nightly", 2)
    assert (run.triggered_by, run.outcome, run.batch_id) == (
        "manual",
        RunOutcome.BATCH_CREATED,
        batch.id,
    )
    assert run.export_uri is not None and run.export_uri.startswith(f"s3://{s3_bucket}/out/")

    second = invoke("schedule", "run", "nightly")
    assert second.exit_code == 0, second.output
    assert "schedule nightly: nothing new (no batch created)" in second.output

    listed = invoke("schedule", "list", "--json")
    assert listed.exit_code == 0, listed.output
    entries = {entry["name"]: entry for entry in json.loads(listed.output)["schedules"]}
    assert set(entries) == {"nightly", "broken"}
    nightly = entries["nightly"]
    assert nightly["trigger"] == "cron 0 2 * * * (Asia/Shanghai)"
    assert nightly["next_run"].endswith("18:00:00+00:00")  # 02:00 in Shanghai
    assert nightly["last_run"]["outcome"] == "nothing_new"
    assert nightly["last_run"]["triggered_by"] == "manual"
    assert entries["broken"]["last_run"] is None

    table = invoke("schedule", "list")
    assert table.exit_code == 0, table.output
    assert "nightly" in table.output and "nothing_new" in table.output
    assert "broken" in table.output and "never" in table.output


def test_a_failed_run_exits_1_and_says_why(
    configured: Path, engine: Engine, s3_bucket: str
) -> None:
    result = invoke("schedule", "run", "broken")
    assert result.exit_code == 1
    assert f"no such S3 bucket: {s3_bucket}-absent" in result.output
    with Store(engine).sessions() as session:
        run = session.scalars(select(ScheduleRun)).one()
    assert (run.outcome, run.error_code) == (RunOutcome.FAILED, "source_bucket_not_found")
    listed = json.loads(invoke("schedule", "list", "--json").output)
    broken = next(entry for entry in listed["schedules"] if entry["name"] == "broken")
    assert broken["last_run"]["error_code"] == "source_bucket_not_found"


def test_unknown_schedule_and_bad_config(configured: Path) -> None:
    result = invoke("schedule", "run", "weekly")
    assert result.exit_code == 2
    assert "no schedule named 'weekly' (configured: broken, nightly)" in result.output
    configured.write_text('[schedules.x]\nevery = "1m"\nsources = ["s3://b/"]\nmodle = "y"\n')
    result = invoke("schedule", "list")
    assert result.exit_code == 2
    assert "schedule 'x': modle: unknown key" in result.output


def test_the_tick_task_runs_due_schedules_and_logs_no_secret(
    configured: Path,
    engine: Engine,
    s3_endpoint: str,
    s3_bucket: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    put_images(s3_endpoint, s3_bucket, "c.png", "d.png")
    # An interval schedule is always due at its latest slot, so the tick has work to do.
    configured.write_text(
        configured.read_text().replace('cron = "0 2 * * *"', 'every = "1h"'), encoding="utf-8"
    )
    app = create_app(load_settings())
    # The task runs with the app's settings, not with whatever the environment says now.
    monkeypatch.setenv("QOCR_CONFIG", str(configured.parent / "elsewhere.toml"))
    get_settings.cache_clear()
    tick = app.tasks[TICK_TASK]
    caplog.set_level(logging.INFO)
    with app:
        assert tick() == {"schedules": 2, "runs": 2, "batches": 1}
        # The next tick finds both slots done (one batch, one failure not yet retried).
        assert tick() == {"schedules": 2, "runs": 0, "batches": 0}
    with Store(engine).sessions() as session:
        rows = session.execute(select(ScheduleRun.schedule_name, ScheduleRun.outcome)).all()
        outcomes = {name: outcome for name, outcome in rows}
        assert session.scalars(select(Batch.total_items)).all() == [2]
        # The tick publishes the new batch at once, as `qocr submit` does.
        assert None not in session.scalars(select(Item.dispatched_at)).all()
    assert outcomes == {"nightly": RunOutcome.BATCH_CREATED, "broken": RunOutcome.FAILED}
    assert SECRET not in caplog.text

    configured.unlink()
    caplog.clear()
    with app:
        assert tick() == {"schedules": 0, "runs": 0, "batches": 0}
    assert "schedule tick skipped" in caplog.text and "no such config file" in caplog.text


def test_a_tick_leaves_publishing_to_the_running_dispatcher(
    configured: Path, engine: Engine, redis_url: str, s3_endpoint: str, s3_bucket: str
) -> None:
    put_images(s3_endpoint, s3_bucket, "e.png")
    configured.write_text(
        configured.read_text().replace('cron = "0 2 * * *"', 'every = "1h"'), encoding="utf-8"
    )
    client = redis.Redis.from_url(redis_url)
    running_dispatcher = FleetLock(client)
    assert running_dispatcher.acquire()
    try:
        with create_app(load_settings()) as app:
            assert app.tasks[TICK_TASK]()["batches"] == 1
        assert client.get(LOCK_KEY) == running_dispatcher.identity.encode()
    finally:
        running_dispatcher.release()
        client.close()
    with Store(engine).sessions() as session:
        # Not published behind the lock holder's back: its next tick sends the item.
        assert session.scalars(select(Item.dispatched_at)).all() == [None]
