"""`qocr retry`, `qocr cancel` and `qocr status --watch` on batches made by the real pipeline.

Batches come from `qocr run` (embedded) or `qocr submit` (Redis broker); the items are then
processed by the embedded runner or by a real `qocr worker` process.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from sqlalchemy import select

from qocr.emulator.testing import EmulatorHandle, running_emulator
from qocr.models import Item, ItemState
from qocr.models.base import utcnow
from qocr.models.db import make_engine
from qocr.models.records import AttemptRecord
from qocr.models.reports import Reports
from qocr.models.states import AttemptOutcome, BatchState
from qocr.models.store import Store
from qocr.settings import load_settings
from qocr.worker.embedded import run_batch as process_batch
from qocr.worker.process import ItemProcessor
from qocr.worker.runtime import memory_runtime
from tests.support.cli_batches import API_KEY, invoke, run_batch
from tests.support.images import png_bytes, write_pngs
from tests.support.pipeline import Deployment
from tests.support.processes import wait_until


@pytest.fixture
def emulator() -> Iterator[EmulatorHandle]:
    # Slow enough for a watcher to see the batch running.
    with running_emulator(recognizer="hash", latency_ms=(150.0, 300.0)) as handle:
        yield handle


@pytest.fixture
def env(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    database_url: str,
    emulator: EmulatorHandle,
) -> Path:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DASHSCOPE_API_KEY", API_KEY)
    monkeypatch.setenv("QOCR_DATABASE_URL", database_url)
    monkeypatch.setenv("QOCR_BASE_URL", emulator.base_url)
    return tmp_path


@pytest.fixture
def reports(database_url: str) -> Iterator[Reports]:
    engine = make_engine(database_url)
    yield Reports(engine)
    engine.dispose()


def ok_json(result: Result) -> dict[str, Any]:
    assert result.exit_code == 0, result.output
    document: dict[str, Any] = json.loads(result.output.strip().splitlines()[-1])
    return document


def status(batch_id: int) -> dict[str, Any]:
    return ok_json(invoke("status", str(batch_id), "--json"))


def process_here(batch_id: int) -> None:
    """Process the batch's queued items with the embedded runner (the worker's code path)."""
    settings = load_settings()
    runtime = memory_runtime(settings)
    # Not open_store: its Alembic check is not thread-safe, and a watcher may be starting.
    runtime.__dict__["store"] = Store(make_engine(settings.database_url))
    try:
        process_batch(ItemProcessor(runtime), batch_id, concurrency=2)
    finally:
        runtime.close()


def mixed_folder(tmp: Path, good: int) -> Path:
    folder = tmp / "in"
    write_pngs(folder, good)
    (folder / "empty.png").write_bytes(b"")
    return folder


# -- retry -----------------------------------------------------------------------------


def test_retry_requeues_the_failed_items_and_they_then_succeed(env: Path, reports: Reports) -> None:
    folder = mixed_folder(env, 2)
    batch_id = run_batch(str(folder))
    before = status(batch_id)
    assert before["errors"] == {"image_empty": 1} and before["state"] == "completed"

    # Nothing matches: nothing changes, and the batch is not reopened.
    none = ok_json(invoke("retry", str(batch_id), "--codes", "rate_limited", "--json"))
    assert none == {"id": batch_id, "requeued": 0, "codes": ["rate_limited"], "state": "completed"}
    assert "no failed or cancelled items with code x, y to retry" in (
        invoke("retry", str(batch_id), "--codes", "x,y").output
    )

    (folder / "empty.png").write_bytes(png_bytes(99))  # the file is fixed
    retried = ok_json(invoke("retry", str(batch_id), "--codes", "image_empty", "--json"))
    assert retried == {
        "id": batch_id,
        "requeued": 1,
        "codes": ["image_empty"],
        "state": "running",
    }
    assert reports.counts(batch_id)[ItemState.QUEUED] == 1
    assert status(batch_id)["counts"]["queued"] == 1

    process_here(batch_id)

    after = status(batch_id)
    assert after["state"] == "completed" and after["errors"] == {}
    assert after["counts"]["succeeded"] == 3
    assert after["usage"]["input_tokens"] > before["usage"]["input_tokens"]


def test_retry_by_a_real_worker(
    deploy: Callable[..., Deployment], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Requeued items are dispatched again by the running worker's dispatcher."""
    deployment = deploy()
    folder = mixed_folder(tmp_path, 3)
    batch_id = deployment.submit(str(folder))
    for name, value in deployment.env().items():
        if name.startswith("QOCR_") or name == "DASHSCOPE_API_KEY":
            monkeypatch.setenv(name, value)
    with deployment.worker():
        assert deployment.wait_finished(batch_id, timeout=60), deployment.logs()
        assert wait_until(lambda: status(batch_id)["state"] == "completed", 10)
        assert status(batch_id)["errors"] == {"image_empty": 1}

        (folder / "empty.png").write_bytes(png_bytes(7))
        assert ok_json(invoke("retry", str(batch_id), "--json"))["requeued"] == 1

        assert wait_until(lambda: status(batch_id)["state"] == "completed", 30), deployment.logs()
    final = status(batch_id)
    assert final["counts"]["succeeded"] == 4 and final["errors"] == {}


# -- cancel ----------------------------------------------------------------------------


def test_cancel_stops_the_queued_items(env: Path, redis_url: str, monkeypatch: Any) -> None:
    monkeypatch.setenv("QOCR_BROKER_URL", redis_url)
    write_pngs(env / "in", 4)
    batch_id = ok_json(invoke("submit", str(env / "in"), "--json"))["id"]  # no worker runs
    assert status(batch_id)["counts"]["queued"] == 4

    cancelled = ok_json(invoke("cancel", str(batch_id), "--json"))
    assert cancelled == {"id": batch_id, "state": "cancelled", "cancelled": 4, "running": 0}
    doc = status(batch_id)
    assert doc["state"] == "cancelled" and doc["counts"]["cancelled"] == 4
    assert doc["errors"] == {"cancelled": 4}
    assert invoke("cancel", str(batch_id)).output.strip() == (
        f"batch {batch_id} is cancelled: nothing to cancel"
    )

    # Cancelled items can be retried, and then processed.
    assert ok_json(invoke("retry", str(batch_id), "--json"))["requeued"] == 4
    process_here(batch_id)
    assert status(batch_id)["counts"]["succeeded"] == 4


def test_cancel_a_running_batch_in_words(env: Path, redis_url: str, monkeypatch: Any) -> None:
    monkeypatch.setenv("QOCR_BROKER_URL", redis_url)
    write_pngs(env / "in", 2)
    batch_id = ok_json(invoke("submit", str(env / "in"), "--json"))["id"]
    result = invoke("cancel", str(batch_id))
    assert result.exit_code == 0
    assert result.output.strip() == (
        f"batch {batch_id} cancelled: 2 queued items cancelled, 0 running items will finish"
    )


# -- watch -----------------------------------------------------------------------------


@pytest.mark.parametrize("as_json", [True, False])
def test_watch_follows_the_batch_until_it_ends(
    env: Path, redis_url: str, monkeypatch: Any, reports: Reports, as_json: bool
) -> None:
    monkeypatch.setenv("QOCR_BROKER_URL", redis_url)
    write_pngs(env / "in", 8)
    batch_id = ok_json(invoke("submit", str(env / "in"), "--json"))["id"]
    worker = threading.Thread(target=process_here, args=(batch_id,))
    worker.start()
    try:
        assert reports.counts(batch_id)[ItemState.SUCCEEDED] < 8  # still going
        started = time.monotonic()
        args = ["status", str(batch_id), "--watch", "--interval", "0.2"]
        result = invoke(*args, *(["--json"] if as_json else []))
        waited = time.monotonic() - started
    finally:
        worker.join(60)
    assert result.exit_code == 0, result.output
    assert waited > 0.3  # it did wait for the items
    assert reports.counts(batch_id)[ItemState.SUCCEEDED] == 8
    if as_json:
        doc = json.loads(result.output)
        assert doc["counts"]["succeeded"] == 8 and doc["done"] == 8
        assert doc["state"] in ("completed", "running")  # the runner closes it right after
    else:
        assert f"batch {batch_id}" in result.output and "8/8" in result.output
        assert "8/8 finished (100.0%)" in result.output


def test_a_running_batch_has_throughput_and_eta(
    env: Path, redis_url: str, monkeypatch: Any, database_url: str, reports: Reports
) -> None:
    monkeypatch.setenv("QOCR_BROKER_URL", redis_url)
    write_pngs(env / "in", 6)
    batch_id = ok_json(invoke("submit", str(env / "in"), "--json"))["id"]
    store = Store(make_engine(database_url))
    # Run three of the six through the real processor; the rest stay queued.
    settings = load_settings()
    runtime = memory_runtime(settings)
    runtime.__dict__["store"] = store
    processor = ItemProcessor(runtime)
    store.reset_dispatched(batch_id)
    for item_id in store.pick_for_dispatch(3, batch_id=batch_id):
        processor.process(item_id)
    runtime.close()

    doc = status(batch_id)
    assert doc["state"] == "running" and doc["counts"]["succeeded"] == 3
    assert doc["progress"] == 0.5 and doc["throughput"]["finished_in_window"] == 3
    rate = doc["throughput"]["items_per_minute"] / 60
    window = doc["throughput"]["window_seconds"]
    assert rate == pytest.approx(3 / window, rel=1e-3)
    # eta_seconds is rounded to 0.1 s (the window can be as short as a second here).
    assert doc["eta_seconds"] == pytest.approx(3 / rate, rel=1e-2, abs=0.051)
    human = invoke("status", str(batch_id)).output
    assert "items/min · ETA" in human


# -- errors and secrets ----------------------------------------------------------------


def test_status_on_a_database_without_the_schema(
    fresh_pg_database: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("QOCR_DATABASE_URL", fresh_pg_database)
    commands = (["status"], ["status", "1", "--json"], ["results", "1"], ["show", "1"])
    for args in (*commands, ["retry", "1"], ["cancel", "1", "--json"]):
        result = invoke(*args)
        assert result.exit_code == 2
        assert "no qocr schema: run `qocr db upgrade` first" in result.output


def test_secrets_never_appear_in_the_output(
    env: Path, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if database_url.startswith("postgresql"):
        # Trust authentication ignores the password; it must not be printed anyway.
        host = database_url.split("@", 1)[1]
        monkeypatch.setenv("QOCR_DATABASE_URL", f"postgresql+psycopg://postgres:pw-s3cret@{host}")
    batch_id = run_batch(str(mixed_folder(env, 1)))
    store = Store(make_engine(database_url))
    with store.sessions() as session:
        item_id = session.scalar(
            select(Item.id).where(Item.batch_id == batch_id, Item.source.like("%empty.png"))
        )
    assert item_id is not None
    # A provider message that quotes the key (as some proxies do) is stored as it came.
    store.requeue_failed(batch_id)
    [picked] = store.pick_for_dispatch(1, batch_id=batch_id)
    now = utcnow()
    claimed = store.claim(picked, "token", now + timedelta(minutes=1))
    assert claimed is not None
    attempt = AttemptRecord(
        started_at=now,
        ended_at=now,
        outcome=AttemptOutcome.FAILED,
        error_code="InvalidApiKey",
        error_message=f"Invalid API-key provided: {API_KEY}",
    )
    store.fail(claimed, "InvalidApiKey", f"bad key {API_KEY}", attempt)
    store.stop_batch(batch_id, f"InvalidApiKey: bad key {API_KEY}", code="batch_stopped")
    store.engine.dispose()

    outputs = [
        invoke("status").output,
        invoke("status", str(batch_id)).output,
        invoke("status", str(batch_id), "--json").output,
        invoke("results", str(batch_id)).output,
        invoke("results", str(batch_id), "--format", "csv").output,
        invoke("show", str(item_id)).output,
        invoke("show", str(item_id), "--json").output,
    ]
    text = "\n".join(outputs)
    assert "InvalidApiKey" in text and "***" in text
    assert API_KEY not in text and "pw-s3cret" not in text
    assert json.loads(outputs[2])["state"] == BatchState.STOPPED.value
