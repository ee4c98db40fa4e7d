"""Batch mode end to end in one process: the dispatcher's step and a worker's shard steps,
on real SQL (SQLite and PostgreSQL) against the emulator's Batch API; no broker.

The step's ``publish`` runs the shard's worker step at once (what a Celery worker does a
moment later), so each test reads as the fleet would run it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Engine, select, update

from qocr.emulator.testing import EmulatorHandle, running_emulator
from qocr.models import Attempt, Item, ItemState, Result
from qocr.models.base import utcnow
from qocr.models.records import AttemptRecord, BatchSpec, SourceRow
from qocr.models.shard_results import LineVerdict, ShardResults
from qocr.models.shard_store import ShardStore
from qocr.models.shards import BatchShard, ShardItem, ShardState
from qocr.models.states import AttemptOutcome, BatchState
from qocr.models.store import Store
from qocr.pricing import price_table
from qocr.qwen.batch_client import BatchClient
from qocr.qwen.options import RecognizeOptions
from qocr.s3 import make_s3_client
from qocr.scheduler.batch_mode import BatchModeTick, batch_client
from qocr.settings import Settings, load_settings
from qocr.worker.batch_shard import ShardWorker
from qocr.worker.runtime import Runtime, memory_runtime
from tests.support.documents import encrypted_pdf_bytes, pdf_bytes, tiff_bytes
from tests.support.images import png_bytes, write_pngs

MODEL = "qwen-vl-ocr-latest"


@dataclass
class Fleet:
    """The dispatcher's batch-mode step and one worker, run in this process."""

    settings: Settings
    store: Store
    emulator: EmulatorHandle
    runtime: Runtime
    client: Callable[[], BatchClient]
    outcomes: list[str] = field(default_factory=list)

    @property
    def shards(self) -> ShardStore:
        return ShardStore(self.store.engine)

    def worker(self) -> ShardWorker:
        return ShardWorker(self.runtime, self.client)

    def tick(self) -> BatchModeTick:
        return BatchModeTick(
            self.shards,
            lambda shard_id: self.outcomes.append(self.worker().advance(shard_id)),
            lambda: batch_client(self.settings),
            max_lines=self.settings.batch_max_lines,
            poll_interval=timedelta(seconds=0),
            republish_after=timedelta(seconds=0),
            step_seconds=0,
        )

    def run_until(self, done: Callable[[], bool], timeout: float = 30.0) -> None:
        tick = self.tick()
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, f"not done; outcomes {self.outcomes}"
            tick.step()
            self.store.complete_finished_batches()
            time.sleep(0.02)

    def submit(
        self, sources: list[str], max_tokens: int | None = None, s3_mode: str = "inline"
    ) -> int:
        options = RecognizeOptions(model=MODEL, prompt="Read the text.", max_tokens=max_tokens)
        spec = BatchSpec(
            name="nightly",
            api="compatible",
            model=MODEL,
            options=options.to_dict(),
            prompt=options.prompt,
            mode="batch",
            source_options={"s3_mode": s3_mode},
        )
        batch_id, _ = self.store.create_batch(spec, [SourceRow(s) for s in sources])
        return batch_id

    def finished(self, batch_id: int) -> bool:
        batch = self.store.get_batch(batch_id)
        return batch is not None and batch.state != BatchState.RUNNING


@pytest.fixture
def make_fleet(engine: Engine, database_url: str) -> Iterator[Callable[..., Fleet]]:
    fleets: list[Fleet] = []
    with running_emulator(recognizer="hash", batch_lines_per_second=0) as emulator:

        def make(**overrides: Any) -> Fleet:
            settings = load_settings(
                DASHSCOPE_API_KEY="sk-test",
                database_url=database_url,
                base_url=emulator.base_url,
                region="cn",
                lease_seconds=5,
                max_attempts=3,
                **{"batch_max_lines": 2, **overrides},
            )
            store = Store(engine)
            runtime = memory_runtime(settings, store)
            fleet = Fleet(settings, store, emulator, runtime, lambda: batch_client(settings))
            fleets.append(fleet)
            return fleet

        yield make
    for fleet in fleets:
        fleet.runtime.close()


def _images(tmp_path: Path, count: int) -> list[str]:
    return [str(path) for path in write_pngs(tmp_path, count)]


def _attempts(engine: Engine, batch_id: int) -> dict[int, list[str]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(Attempt.item_id, Attempt.outcome)
            .join(Item, Item.id == Attempt.item_id)
            .where(Item.batch_id == batch_id)
            .order_by(Attempt.item_id, Attempt.number)
        ).all()
    found: dict[int, list[str]] = {}
    for item_id, outcome in rows:
        found.setdefault(item_id, []).append(str(outcome))
    return found


def test_every_item_gets_one_result_through_shards_of_at_most_max_lines(
    make_fleet: Callable[..., Fleet], engine: Engine, tmp_path: Path
) -> None:
    fleet = make_fleet()
    batch_id = fleet.submit(_images(tmp_path, 5))
    fleet.run_until(lambda: fleet.finished(batch_id))

    assert fleet.store.counts_by_state(batch_id)[ItemState.SUCCEEDED] == 5
    shards = fleet.shards.shards_of(batch_id)
    assert [shard.lines for shard in shards] == [2, 2, 1]
    assert all(s.state == ShardState.DONE and s.provider_status == "completed" for s in shards)
    attempts = _attempts(engine, batch_id)
    assert all(outcomes == ["succeeded"] for outcomes in attempts.values())
    with engine.connect() as conn:
        results = conn.execute(
            select(Result.request_id, Result.finish_reason, Result.input_tokens)
            .join(Item, Item.id == Result.item_id)
            .where(Item.batch_id == batch_id)
        ).all()
    assert len(results) == 5
    assert all(r.request_id and r.finish_reason == "stop" and r.input_tokens > 0 for r in results)
    stats = fleet.emulator.batch_stats()
    assert stats["batches"] == 3 and stats["uploads"] == 3
    assert all(count == 1 for count in stats["uploads_by_name"].values())


def test_realtime_dispatch_never_picks_a_batch_mode_item(
    make_fleet: Callable[..., Fleet], tmp_path: Path
) -> None:
    fleet = make_fleet()
    fleet.submit(_images(tmp_path, 3))
    assert fleet.store.pick_for_dispatch(100) == []


def test_documents_are_read_as_pages_as_in_realtime(
    make_fleet: Callable[..., Fleet], engine: Engine, tmp_path: Path
) -> None:
    # The worker building a shard's file expands each document it holds (the document ends
    # `expanded` and leaves the shard); its pages are rendered into later shards' lines,
    # one result each. A document that cannot be read fails with its code, unsent.
    fleet = make_fleet(batch_max_lines=3)
    files = {
        "invoice.pdf": pdf_bytes(2),
        "scan.tif": tiff_bytes(3),
        "locked.pdf": encrypted_pdf_bytes(),
    }
    for name, data in files.items():
        (tmp_path / name).write_bytes(data)
    image = _images(tmp_path, 1)[0]
    batch_id = fleet.submit([*(str(tmp_path / name) for name in files), image])
    fleet.run_until(lambda: fleet.finished(batch_id))

    with engine.connect() as conn:
        rows = conn.execute(
            select(Item.source, Item.state, Item.page, Item.last_error_code, Result.text)
            .outerjoin(Result, Result.item_id == Item.id)
            .where(Item.batch_id == batch_id)
            .order_by(Item.id)
        ).all()
        total = fleet.store.get_batch(batch_id)
    found = {(Path(r.source).name, r.state, r.page, r.last_error_code) for r in rows}
    assert found == {
        ("invoice.pdf", ItemState.EXPANDED, None, None),
        ("scan.tif", ItemState.EXPANDED, None, None),
        ("locked.pdf", ItemState.FAILED, None, "document_encrypted"),
        (Path(image).name, ItemState.SUCCEEDED, None, None),
        ("invoice.pdf#page=1", ItemState.SUCCEEDED, 1, None),
        ("invoice.pdf#page=2", ItemState.SUCCEEDED, 2, None),
        ("scan.tif#page=1", ItemState.SUCCEEDED, 1, None),
        ("scan.tif#page=2", ItemState.SUCCEEDED, 2, None),
        ("scan.tif#page=3", ItemState.SUCCEEDED, 3, None),
    }
    assert all(r.text for r in rows if r.state == ItemState.SUCCEEDED)
    assert total is not None and total.total_items == 9
    # Only images and pages were ever lines: 6 of them, no document and nothing for the
    # encrypted one; every line counted once.
    assert sum(shard.lines or 0 for shard in fleet.shards.shards_of(batch_id)) == 6
    attempts = _attempts(engine, batch_id)
    assert sorted(len(outcomes) for outcomes in attempts.values()) == [1] * 6
    assert fleet.store.counts_by_state(batch_id)[ItemState.QUEUED] == 0


def test_with_presigned_s3_images_a_documents_pages_still_go_inline(
    make_fleet: Callable[..., Fleet], engine: Engine, s3_endpoint: str, s3_bucket: str
) -> None:
    # --s3-mode presign sends an S3 image as a URL the provider downloads; a PDF on S3 is
    # downloaded by the worker, expanded, and its pages (rendered: no stored file) go inline.
    fleet = make_fleet(s3_endpoint_url=s3_endpoint)
    client = make_s3_client(s3_endpoint)
    client.put_object(Bucket=s3_bucket, Key="in/invoice.pdf", Body=pdf_bytes(2))
    client.put_object(Bucket=s3_bucket, Key="in/scan.png", Body=png_bytes(7))
    sources = [f"s3://{s3_bucket}/in/invoice.pdf", f"s3://{s3_bucket}/in/scan.png"]
    batch_id = fleet.submit(sources, s3_mode="presign")
    fleet.run_until(lambda: fleet.finished(batch_id))

    counts = fleet.store.counts_by_state(batch_id)
    assert (counts[ItemState.SUCCEEDED], counts[ItemState.EXPANDED]) == (3, 1)
    with engine.connect() as conn:
        texts = conn.execute(
            select(Item.source, Result.text)
            .join(Result, Result.item_id == Item.id)
            .where(Item.batch_id == batch_id)
        ).all()
    assert sorted(source for source, _ in texts) == [
        f"{sources[0]}#page=1",
        f"{sources[0]}#page=2",
        sources[1],
    ]
    assert all(text for _, text in texts)


def test_a_line_error_is_a_failed_attempt_and_the_item_goes_into_a_later_shard(
    make_fleet: Callable[..., Fleet], engine: Engine, tmp_path: Path
) -> None:
    fleet = make_fleet()
    fleet.emulator.set_batch_faults(plans=[{"error_lines": 1}])
    batch_id = fleet.submit(_images(tmp_path, 2))
    fleet.run_until(lambda: fleet.finished(batch_id))

    assert fleet.store.counts_by_state(batch_id)[ItemState.SUCCEEDED] == 2
    attempts = sorted(_attempts(engine, batch_id).values())
    assert attempts == [["retry", "succeeded"], ["succeeded"]]
    with engine.connect() as conn:
        code = conn.scalar(
            select(Attempt.error_code).where(Attempt.outcome == AttemptOutcome.RETRY)
        )
    assert code == "InternalError"
    assert len(fleet.shards.shards_of(batch_id)) == 2


def test_an_expired_shards_missing_lines_are_resubmitted_in_a_later_shard(
    make_fleet: Callable[..., Fleet], engine: Engine, tmp_path: Path
) -> None:
    fleet = make_fleet(batch_max_lines=3)
    fleet.emulator.set_batch_faults(plans=[{"expire_after_lines": 1}])
    batch_id = fleet.submit(_images(tmp_path, 3))
    fleet.run_until(lambda: fleet.finished(batch_id))

    assert fleet.store.counts_by_state(batch_id)[ItemState.SUCCEEDED] == 3
    shards = fleet.shards.shards_of(batch_id)
    assert [(s.lines, s.provider_status) for s in shards] == [(3, "expired"), (2, "completed")]
    attempts = sorted(_attempts(engine, batch_id).values())
    assert attempts == [["retry", "succeeded"], ["retry", "succeeded"], ["succeeded"]]
    with engine.connect() as conn:
        codes = set(conn.scalars(select(Attempt.error_code).where(Attempt.error_code.is_not(None))))
    assert codes == {"batch_expired"}


def test_lines_that_keep_expiring_fail_once_their_attempts_are_spent(
    make_fleet: Callable[..., Fleet], tmp_path: Path
) -> None:
    fleet = make_fleet()  # max_attempts=3
    fleet.emulator.set_batch_faults(plans=[{"expire_after_lines": 0}] * 3)
    batch_id = fleet.submit(_images(tmp_path, 1))
    fleet.run_until(lambda: fleet.finished(batch_id))

    counts = fleet.store.counts_by_state(batch_id)
    assert counts[ItemState.FAILED] == 1
    with fleet.store.sessions() as session:
        item = session.scalars(select(Item).where(Item.batch_id == batch_id)).one()
    assert item.attempts == 3 and item.last_error_code == "batch_expired"


def test_a_batch_mode_batch_costs_half_the_realtime_price(
    make_fleet: Callable[..., Fleet], tmp_path: Path
) -> None:
    from qocr.models.batch_documents import batch_document
    from qocr.models.reports import Reports

    fleet = make_fleet()
    batch_id = fleet.submit(_images(tmp_path, 2))
    fleet.run_until(lambda: fleet.finished(batch_id))

    prices = price_table("cn")
    document = batch_document(Reports(fleet.store.engine), batch_id, prices, None)
    assert document is not None
    usage = document["usage"]
    realtime = prices.price(MODEL).cost(usage["input_tokens"], usage["output_tokens"])
    assert document["cost"]["usd"] == pytest.approx(realtime / 2, abs=1e-6)
    assert document["mode"] == "batch"
    assert [shard["provider_status"] for shard in document["shards"]] == ["completed"]
    assert document["progress"] == 1.0


def test_progress_stays_below_100_percent_while_a_shard_is_finalizing(
    make_fleet: Callable[..., Fleet], tmp_path: Path
) -> None:
    from qocr.models.batch_documents import batch_document
    from qocr.models.reports import Reports

    fleet = make_fleet()
    batch_id = fleet.submit(_images(tmp_path, 2))
    fleet.shards.open_shard(batch_id, 2)
    [shard] = fleet.shards.shards_of(batch_id)
    with fleet.store.engine.begin() as conn:
        conn.execute(
            update(BatchShard)
            .where(BatchShard.id == shard.id)
            .values(
                state=ShardState.SUBMITTED,
                provider_status="finalizing",
                request_total=2,
                request_completed=2,
                lines=2,
            )
        )
    document = batch_document(Reports(fleet.store.engine), batch_id, price_table("cn"), None)
    assert document is not None
    assert document["progress"] < 1.0
    assert document["shards"][0]["provider_status"] == "finalizing"


class _CrashAfter(BatchClient):
    """A client whose process dies right after one call went through (the answer is lost)."""

    crash_on: str = ""

    def upload(self, filename: str, path: Path) -> str:
        file_id = super().upload(filename, path)
        if self.crash_on == "upload":
            raise SystemExit("killed after the upload left")
        return file_id

    def create_batch(self, input_file_id: str, endpoint: str, metadata: dict[str, str]) -> Any:
        created = super().create_batch(input_file_id, endpoint, metadata)
        if self.crash_on == "create":
            raise SystemExit("killed after the provider batch was made")
        return created


@pytest.mark.parametrize("crash_on", ["upload", "create"])
def test_a_worker_dying_mid_submit_never_uploads_or_creates_twice(
    make_fleet: Callable[..., Fleet], engine: Engine, tmp_path: Path, crash_on: str
) -> None:
    fleet = make_fleet()
    batch_id = fleet.submit(_images(tmp_path, 2))
    shard_id = fleet.shards.open_shard(batch_id, 2)
    assert shard_id is not None

    def crashing() -> BatchClient:
        client = _CrashAfter("sk-test", region="cn", base_url=fleet.emulator.base_url)
        client.crash_on = crash_on
        return client

    with pytest.raises(SystemExit):
        ShardWorker(fleet.runtime, crashing).advance(shard_id)
    # The dead worker's lease runs out.
    with engine.begin() as conn:
        conn.execute(
            update(BatchShard)
            .where(BatchShard.id == shard_id)
            .values(lease_until=utcnow() - timedelta(seconds=1))
        )
    assert fleet.worker().advance(shard_id) == "submitted"
    fleet.run_until(lambda: fleet.finished(batch_id))

    stats = fleet.emulator.batch_stats()
    assert stats["uploads"] == 1 and stats["batches"] == 1
    assert fleet.store.counts_by_state(batch_id)[ItemState.SUCCEEDED] == 2
    assert sorted(_attempts(engine, batch_id).values()) == [["succeeded"], ["succeeded"]]


def test_cancel_cancels_the_provider_batch_and_its_items_calls_are_abandoned(
    make_fleet: Callable[..., Fleet], engine: Engine, tmp_path: Path
) -> None:
    fleet = make_fleet()
    fleet.emulator.set_batch_faults(plans=[])
    batch_id = fleet.submit(_images(tmp_path, 2))
    tick = fleet.tick()
    tick.plan()
    [shard] = fleet.shards.shards_of(batch_id)
    # Held at the provider: the worker built and sent it, but it has not run yet.
    with running_emulator(recognizer="hash", batch_lines_per_second=0.2) as slow:
        slow_settings = load_settings(
            DASHSCOPE_API_KEY="sk-test",
            database_url=fleet.settings.database_url,
            base_url=slow.base_url,
            region="cn",
            lease_seconds=5,
        )
        worker = ShardWorker(fleet.runtime, lambda: batch_client(slow_settings))
        assert worker.advance(shard.id) == "submitted"
        assert fleet.store.cancel_batch(batch_id) == 2
        tick = BatchModeTick(
            fleet.shards,
            lambda shard_id: fleet.outcomes.append(worker.advance(shard_id)),
            lambda: batch_client(slow_settings),
            max_lines=2,
            poll_interval=timedelta(0),
            republish_after=timedelta(0),
            step_seconds=0,
        )
        deadline = time.monotonic() + 20
        while fleet.shards.shards_of(batch_id)[0].state != ShardState.DONE:
            assert time.monotonic() < deadline
            tick.step()
            time.sleep(0.05)
    [done] = fleet.shards.shards_of(batch_id)
    assert done.provider_status == "cancelled"
    assert fleet.store.counts_by_state(batch_id)[ItemState.CANCELLED] == 2
    attempts = sorted(_attempts(engine, batch_id).values())
    assert attempts == [["abandoned"], ["abandoned"]]


def test_a_duplicate_or_unknown_custom_id_never_makes_a_second_result(
    make_fleet: Callable[..., Fleet], engine: Engine, tmp_path: Path
) -> None:
    from qocr.models.records import ResultRecord

    fleet = make_fleet()
    batch_id = fleet.submit(_images(tmp_path, 1))
    shard_id = fleet.shards.open_shard(batch_id, 2)
    assert shard_id is not None
    lease = fleet.shards.lease(shard_id, "t" * 32, utcnow() + timedelta(seconds=30))
    assert lease is not None
    assert len(fleet.shards.count_calls(lease, 100, "test", 3)) == 1
    with engine.connect() as conn:
        item_id = conn.scalar(select(ShardItem.item_id))
    assert item_id is not None
    now = utcnow()
    attempt = AttemptRecord(now, now, AttemptOutcome.SUCCEEDED, http_status=200)
    verdict = LineVerdict(item_id, attempt, result=ResultRecord(text="first"))
    second = LineVerdict(item_id, attempt, result=ResultRecord(text="second"))
    unknown = LineVerdict(item_id + 1000, attempt, result=ResultRecord(text="stranger"))
    applied = ShardResults(engine).apply(lease, [verdict, second, unknown], 3)
    assert (applied.succeeded, applied.ignored) == (1, 2)
    with engine.connect() as conn:
        assert list(conn.scalars(select(Result.text))) == ["first"]
