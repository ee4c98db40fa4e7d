"""`qocr beat` for real: a schedule due every 5 s becomes one batch that a real `qocr worker`
completes against the emulator, then is exported; later slots find nothing new.

Real processes and services: `qocr db upgrade` on a fresh PostgreSQL database, Redis db 13
as the broker, moto's S3 server, the Qwen-OCR emulator (hash recognizer).
"""

from __future__ import annotations

import json
import subprocess
from datetime import UTC
from pathlib import Path

import pytest
from sqlalchemy import func, inspect, select, text

from qocr.emulator.testing import running_emulator
from qocr.migrations import migrate
from qocr.models.db import make_engine
from qocr.models.entities import Batch
from qocr.models.schedule_run import RunOutcome, ScheduleRun
from qocr.models.states import BatchState, ItemState
from qocr.s3 import make_s3_client
from tests.support.images import expected_text, png_bytes
from tests.support.pipeline import API_KEY, Deployment
from tests.support.processes import QOCR, qocr_env, qocr_process, wait_until

pytestmark = pytest.mark.timeout(240)


def test_beat_makes_one_batch_per_new_file_set_and_workers_complete_it(
    fresh_pg_database: str, redis_url: str, s3_endpoint: str, s3_bucket: str, tmp_path: Path
) -> None:
    from qocr.settings import load_settings
    from qocr.worker.app import create_app
    from qocr.worker.queues import TICK_TASK

    assert TICK_TASK in create_app(load_settings()).tasks, (
        "the worker does not know the tick: worker/app.py must call "
        "register_tick_task(app, state) (from worker.beat) in create_app"
    )
    upgrade = subprocess.run(
        [*QOCR, "db", "upgrade"],
        env=qocr_env(QOCR_DATABASE_URL=fresh_pg_database),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert upgrade.returncode == 0, upgrade.stderr
    engine = make_engine(fresh_pg_database)
    assert migrate.is_current(engine), upgrade.stdout
    assert inspect(engine).has_table("schedule_runs")
    engine.dispose()

    s3 = make_s3_client(s3_endpoint)
    expected = {}
    for index in range(3):
        key = f"scans/doc-{index}.png"
        s3.put_object(Bucket=s3_bucket, Key=key, Body=png_bytes(index))
        expected[f"s3://{s3_bucket}/{key}"] = expected_text(png_bytes(index))
    s3.put_object(Bucket=s3_bucket, Key="scans/readme.txt", Body=b"not an image")
    config = tmp_path / "qocr.toml"
    config.write_text(
        f"""
[beat]
tick_seconds = 1

[schedules.fast]
every = "5s"
sources = ["s3://{s3_bucket}/scans/"]
task = "text_recognition"
results_to = "s3://{s3_bucket}/exports/{{schedule}}-{{slot}}.jsonl"
""",
        encoding="utf-8",
    )

    with running_emulator(recognizer="hash") as emulator:
        deployment = Deployment(
            tmp=tmp_path,
            database_url=fresh_pg_database,
            broker_url=redis_url,
            emulator=emulator,
            extra_env={"QOCR_S3_ENDPOINT_URL": s3_endpoint, "QOCR_CONFIG": str(config)},
        )
        store = deployment.store
        try:
            beat_env = deployment.env()
            with (
                deployment.worker(),
                qocr_process(["beat"], beat_env, tmp_path / "beat.log", cwd=tmp_path),
            ):

                def batch_ids() -> list[int]:
                    with store.sessions() as session:
                        return list(session.scalars(select(Batch.id).order_by(Batch.id)))

                assert wait_until(lambda: len(batch_ids()) > 0, 60), deployment.logs()
                [batch_id] = batch_ids()
                assert deployment.wait_finished(batch_id, timeout=90), deployment.logs()

                def run_of_batch() -> ScheduleRun | None:
                    with store.sessions() as session:
                        return session.scalar(
                            select(ScheduleRun).where(ScheduleRun.batch_id == batch_id)
                        )

                def exported() -> bool:
                    run = run_of_batch()
                    return run is not None and run.exported_at is not None

                assert wait_until(exported, 60), deployment.logs()

                def nothing_new_runs() -> int:
                    with store.sessions() as session:
                        return int(
                            session.scalar(
                                select(func.count())
                                .select_from(ScheduleRun)
                                .where(ScheduleRun.outcome == RunOutcome.NOTHING_NEW)
                            )
                            or 0
                        )

                # Two more slots come and go: nothing new, so no second batch.
                assert wait_until(lambda: nothing_new_runs() >= 2, 30), deployment.logs()
                assert batch_ids() == [batch_id]

            with store.sessions() as session:
                batch = session.get(Batch, batch_id)
                assert batch is not None
                assert (batch.schedule_name, batch.state) == ("fast", BatchState.COMPLETED)
                assert batch.scheduled_for is not None
                assert batch.scheduled_for.timestamp() % 5 == 0
                run = session.scalars(
                    select(ScheduleRun).where(ScheduleRun.batch_id == batch_id)
                ).one()
                assert (run.triggered_by, run.outcome, run.new_items) == (
                    "beat",
                    RunOutcome.BATCH_CREATED,
                    3,
                )
                assert run.scheduled_for == batch.scheduled_for
                slots = session.scalars(select(ScheduleRun.scheduled_for)).all()
            # One run row per slot, never two.
            assert len(slots) == len(set(slots))
            assert deployment.results_by_source(batch_id) == expected
            assert deployment.counts(batch_id)[ItemState.SUCCEEDED] == 3
            # Each image was paid for once, however many ticks and slots went by.
            stats = emulator.stats()
            assert sorted(stats["successes_per_image"].values()) == [1, 1, 1]

            assert run.export_uri is not None
            slot_text = batch.scheduled_for.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")
            key = f"exports/fast-{slot_text}.jsonl"
            assert run.export_uri == f"s3://{s3_bucket}/{key}"
            body = s3.get_object(Bucket=s3_bucket, Key=key)["Body"].read().decode()
            lines = [json.loads(line) for line in body.splitlines()]
            assert {line["source"]: line["text"] for line in lines} == expected
            assert {line["state"] for line in lines} == {"succeeded"}

            # The key is in no log and in no row.
            assert API_KEY not in deployment.logs()
            with store.engine.connect() as connection:
                for table in ("batches", "items", "schedule_runs", "attempts", "results"):
                    rows = connection.execute(text(f"SELECT * FROM {table}")).all()
                    assert API_KEY not in repr(rows), table
        finally:
            deployment.close()
