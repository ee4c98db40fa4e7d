"""The Python API's records are the documents of docs/cli-json.md: read from them, and
giving them back key for key, in order (the library and the CLI cannot drift apart)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from qocr.api.records import Batch, BatchStatus, ItemResult
from qocr.models.batch_documents import delivery_json, line_json, shard_json, summary_json
from qocr.models.documents import item_json
from qocr.models.report_records import (
    BatchInfo,
    BatchLine,
    BatchSummary,
    ItemRow,
    Recent,
    ResultInfo,
    Usage,
)
from qocr.models.shard_store import ShardInfo
from qocr.models.shards import ShardState
from qocr.models.states import BatchState, ItemState
from qocr.models.webhooks import DeliveryInfo, DeliveryState
from qocr.pricing import price_table

NOW = datetime(2026, 11, 30, 9, 30, 0, 123456, tzinfo=UTC)
SECRET = "sk-records-unit-0001"
INFO = BatchInfo(
    id=12,
    name="s3://invoices/2026-11/",
    state=BatchState.RUNNING,
    stop_reason=None,
    api="compatible",
    model="qwen-vl-ocr-latest",
    task="key_information_extraction",
    result_schema={"number": ""},
    total=5,
    created_at=NOW - timedelta(minutes=3),
    updated_at=NOW - timedelta(minutes=3),
    finished_at=None,
    idempotency_key="nightly-2026-11-30",
    notify_url="https://hooks.example.com/T0/B0/xyz",
)
COUNTS = {
    ItemState.QUEUED: 1,
    ItemState.RUNNING: 1,
    ItemState.SUCCEEDED: 2,
    ItemState.FAILED: 1,
    ItemState.CANCELLED: 0,
    ItemState.EXPANDED: 0,
}


def test_a_batch_status_is_its_document() -> None:
    usage = Usage(1200, 80, 900, 1280)
    summary = BatchSummary(
        batch=INFO,
        counts=COUNTS,
        usage=usage,
        usage_by_model={"qwen-vl-ocr-latest": usage},
        finish_reasons={"stop": 1, "length": 1},
        errors={"image_empty": 1},
    )
    recent = Recent(since=NOW - timedelta(minutes=3), finished=3)
    document = summary_json(summary, price_table("intl"), recent, NOW, SECRET)
    delivery = DeliveryInfo(
        delivery_id="0f" * 16,
        event="completed",
        url=INFO.notify_url or "",
        state=DeliveryState.PENDING,
        attempts=2,
        last_http_status=503,
        last_error="HTTP 503 Service Unavailable",
        created_at=NOW,
        next_attempt_at=NOW + timedelta(seconds=20),
        delivered_at=None,
    )
    document["webhooks"] = [delivery_json(delivery, SECRET)]

    status = BatchStatus.from_document(document)

    assert list(status.to_dict().items()) == list(document.items())
    assert status.state is BatchState.RUNNING and status.counts.succeeded == 2
    assert isinstance(status.created_at, datetime) and status.finished_at is None
    assert status.throughput is not None and status.throughput.finished_in_window == 3
    assert status.cost.models[0].model == "qwen-vl-ocr-latest"
    assert status.notify_url == "https://hooks.example.com/…"
    assert status.webhooks[0].url == "https://hooks.example.com/…"
    assert status.webhooks[0].next_attempt_at == NOW + timedelta(seconds=20)


def test_a_batch_mode_status_carries_its_shards_and_a_realtime_one_has_none() -> None:
    none = Usage(0, 0, 0, 0)
    summary = BatchSummary(INFO, COUNTS, none, {}, finish_reasons={}, errors={})
    document = summary_json(summary, price_table("intl"), None, NOW, SECRET)
    document["webhooks"] = []
    assert "shards" not in BatchStatus.from_document(document).to_dict()
    shard = ShardInfo(
        id=3,
        state=ShardState.SUBMITTED,
        provider_status="in_progress",
        provider_batch_id="batch_0a1b",
        lines=2,
        total=2,
        completed=1,
        failed=0,
        error_message=f"upload retried: key {SECRET} refused once",
        created_at=NOW - timedelta(minutes=2),
        submitted_at=NOW - timedelta(minutes=1),
        finished_at=None,
    )
    document["shards"] = [shard_json(shard, SECRET)]

    status = BatchStatus.from_document(document)

    assert list(status.to_dict().items()) == list(document.items())
    assert status.shards is not None
    [read] = status.shards
    assert (read.id, read.state, read.provider_status) == (3, "submitted", "in_progress")
    assert read.request_counts.completed == 1 and read.lines == 2
    assert read.submitted_at == NOW - timedelta(minutes=1) and read.finished_at is None
    assert read.created_at == NOW - timedelta(minutes=2)
    assert read.error is not None and SECRET not in read.error


def test_a_batch_is_its_status_list_line_and_submit_says_whether_it_existed() -> None:
    document = line_json(BatchLine(batch=INFO, counts=COUNTS), NOW, SECRET)

    batch = Batch.from_document(document)

    assert list(batch.to_dict().items()) == list(document.items())
    assert "existing" not in batch.to_dict() and batch.existing is False
    assert (batch.done, batch.failed, batch.counts.queued) == (3, 1, 1)
    assert batch.state is BatchState.RUNNING and isinstance(batch.created_at, datetime)


def test_an_item_result_is_its_jsonl_line_with_the_secret_masked() -> None:
    result = ResultInfo(
        text="INV-001",
        kv_result={"number": "INV-001"},
        words_info=None,
        parsed={"number": "INV-001"},
        finish_reason="stop",
        request_id="req-1",
        model="qwen-vl-ocr-latest",
        usage=Usage(700, 30, 450, 730),
        latency_ms=812.5,
        created_at=NOW,
    )
    done = ItemRow(4031, 12, "s3://b/1.png", ItemState.SUCCEEDED, 1, None, None, NOW, NOW, result)
    failed = ItemRow(
        4032,
        12,
        "s3://b/2.png",
        ItemState.FAILED,
        2,
        "InvalidApiKey",
        f"key {SECRET}",
        NOW,
        NOW,
        None,
    )

    for row in (done, failed):
        record = ItemResult.from_row(row, SECRET)
        assert list(record.to_dict().items()) == list(item_json(row, SECRET).items())
    assert ItemResult.from_row(failed, SECRET).error_message == "key ***"
    assert ItemResult.from_row(done, SECRET).usage is not None
