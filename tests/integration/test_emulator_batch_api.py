"""The emulator's Batch API, driven by the official openai SDK and by qocr's own client."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
from openai import OpenAI

from qocr.emulator.testing import EmulatorHandle, running_emulator, text_png
from qocr.qwen.batch_api import ProviderStatus, parse_line, request_line
from qocr.qwen.batch_client import BatchClient
from qocr.qwen.errors import ServerError
from qocr.qwen.images import to_data_url
from qocr.qwen.options import RecognizeOptions

OPTIONS = RecognizeOptions(model="qwen-vl-ocr-latest", prompt="Read the text.")


def _jsonl(count: int, custom_id: str = "line-{n}") -> bytes:
    image = to_data_url(text_png(["INVOICE 42"]), "image/png")
    return b"".join(request_line(custom_id.format(n=n), image, OPTIONS) for n in range(count))


def _wait(read: Any, done: set[str], timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        batch = read()
        if batch.status in done or time.monotonic() > deadline:
            return batch
        time.sleep(0.05)


def test_the_openai_sdk_uploads_creates_retrieves_downloads_and_cancels() -> None:
    with running_emulator(recognizer="hash", batch_lines_per_second=0) as emulator:
        client = OpenAI(base_url=emulator.compatible_base_url, api_key="sk-test")
        uploaded = client.files.create(file=("in.jsonl", _jsonl(3)), purpose="batch")
        assert uploaded.purpose == "batch" and uploaded.bytes > 0
        batch = client.batches.create(
            input_file_id=uploaded.id,
            endpoint="/v1/chat/completions",
            completion_window="24h",
            metadata={"ds_name": "sdk test", "ds_description": "three lines"},
        )
        assert batch.metadata == {"ds_name": "sdk test", "ds_description": "three lines"}
        done = _wait(lambda: client.batches.retrieve(batch.id), {"completed", "failed"})
        assert done.status == "completed"
        assert done.request_counts is not None and done.request_counts.completed == 3
        assert done.output_file_id is not None and done.error_file_id is None
        lines = client.files.content(done.output_file_id).text.splitlines()
        assert sorted(json.loads(line)["custom_id"] for line in lines) == [
            "line-0",
            "line-1",
            "line-2",
        ]
        first = json.loads(lines[0])
        assert first["response"]["status_code"] == 200
        assert first["response"]["body"]["object"] == "chat.completion"
        assert first["response"]["request_id"]

    with running_emulator(recognizer="hash", batch_lines_per_second=2) as emulator:
        client = OpenAI(base_url=emulator.compatible_base_url, api_key="sk-test")
        uploaded = client.files.create(file=("slow.jsonl", _jsonl(20)), purpose="batch")
        batch = client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        cancelling = client.batches.cancel(batch.id)
        assert cancelling.status in ("cancelling", "cancelled")
        ended = _wait(lambda: client.batches.retrieve(batch.id), {"cancelled"})
        assert ended.status == "cancelled"
        assert ended.request_counts is not None and ended.request_counts.completed < 20


@pytest.fixture
def emulator() -> Any:
    with running_emulator(recognizer="hash", batch_lines_per_second=0) as handle:
        yield handle


def _client(emulator: EmulatorHandle) -> BatchClient:
    return BatchClient("sk-test", region="cn", base_url=emulator.base_url)


def test_a_file_with_a_duplicate_custom_id_fails_validation(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    path = tmp_path / "dup.jsonl"
    path.write_bytes(_jsonl(2, custom_id="same"))
    with _client(emulator) as client:
        file_id = client.upload("dup.jsonl", path)
        created = client.create_batch(file_id, "/v1/chat/completions", {"ds_name": "dup"})
        ended = _wait(lambda: client.retrieve(created.id), {"failed", "completed"})
    assert ended.status == ProviderStatus.FAILED
    assert ended.error is not None and ended.error.startswith("duplicate_custom_id")


def test_injected_line_errors_land_in_the_error_file_as_retryable_errors(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    emulator.set_batch_faults(plans=[{"error_lines": 2}])
    path = tmp_path / "in.jsonl"
    path.write_bytes(_jsonl(5, custom_id="{n}"))
    with _client(emulator) as client:
        file_id = client.upload("in.jsonl", path)
        created = client.create_batch(file_id, "/v1/chat/completions", {"ds_name": "errors"})
        ended = _wait(lambda: client.retrieve(created.id), {"completed"})
        assert ended.counts.completed == 3 and ended.counts.failed == 2
        assert ended.error_file_id is not None and ended.output_file_id is not None
        client.download(ended.error_file_id, tmp_path / "errors.jsonl")
        client.download(ended.output_file_id, tmp_path / "out.jsonl")
    errors = [
        parse_line(line, OPTIONS) for line in (tmp_path / "errors.jsonl").read_bytes().splitlines()
    ]
    assert sorted(e.custom_id or "" for e in errors) == ["0", "1"]
    assert all(isinstance(e.error, ServerError) and e.error.retryable for e in errors)
    outputs = [
        parse_line(line, OPTIONS) for line in (tmp_path / "out.jsonl").read_bytes().splitlines()
    ]
    assert all(o.result is not None and o.result.usage is not None for o in outputs)
    assert all(o.result is not None and o.result.request_id for o in outputs)


def test_an_expired_batch_keeps_only_the_lines_it_ran(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    emulator.set_batch_faults(plans=[{"expire_after_lines": 2}])
    path = tmp_path / "in.jsonl"
    path.write_bytes(_jsonl(4, custom_id="{n}"))
    with _client(emulator) as client:
        file_id = client.upload("in.jsonl", path)
        created = client.create_batch(file_id, "/v1/chat/completions", {"ds_name": "expiry"})
        ended = _wait(lambda: client.retrieve(created.id), {"expired", "completed"})
        assert ended.status == ProviderStatus.EXPIRED
        assert ended.counts.completed == 2 and ended.error_file_id is None
        assert client.find_batch(file_id) is not None
        assert client.find_batch("file-unknown") is None


def test_an_upload_whose_answer_was_lost_is_found_by_its_name(
    emulator: EmulatorHandle, tmp_path: Path
) -> None:
    path = tmp_path / "in.jsonl"
    path.write_bytes(_jsonl(1))
    with _client(emulator) as client:
        assert client.find_file("qocr-batch1-shard1.jsonl") is None
        file_id = client.upload("qocr-batch1-shard1.jsonl", path)
        assert client.find_file("qocr-batch1-shard1.jsonl") == file_id
