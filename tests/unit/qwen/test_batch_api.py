"""The Batch API's pure parts: who it serves, input lines, output and error lines, batches."""

from __future__ import annotations

import json

import pytest

from qocr.qwen.batch_api import (
    ProviderStatus,
    parse_batch,
    parse_line,
    request_line,
    unsupported_reason,
)
from qocr.qwen.errors import (
    InvalidRequestError,
    ProtocolError,
    QwenError,
    RateLimitError,
    ServerError,
)
from qocr.qwen.options import RecognizeOptions

OPTIONS = RecognizeOptions(model="qwen-vl-ocr-latest", task="text_recognition")


@pytest.mark.parametrize(
    ("api", "region", "model", "stream", "said"),
    [
        ("compatible", "cn", "qwen-vl-ocr-latest", False, None),
        ("compatible", "cn", "qwen-vl-ocr", False, None),
        ("compatible", "cn", "batch-test-model", False, None),
        ("dashscope", "cn", "qwen-vl-ocr-latest", False, "OpenAI-compatible"),
        ("compatible", "cn", "qwen-vl-ocr-latest", True, "does not stream"),
        ("compatible", "intl", "qwen-vl-ocr-latest", False, "China (Beijing)"),
        ("compatible", "us", "qwen-vl-ocr-latest", False, "China (Beijing)"),
        ("compatible", "cn", "qwen-vl-ocr-2025-04-13", False, "does not serve"),
    ],
)
def test_the_batch_api_serves_qwen_ocr_in_beijing_only(
    api: str, region: str, model: str, stream: bool, said: str | None
) -> None:
    reason = unsupported_reason(api, region, model, stream)
    assert (reason is None) if said is None else (reason is not None and said in reason)


def test_a_request_line_carries_the_item_id_the_endpoint_and_the_realtime_body() -> None:
    line = request_line("42", "https://example.com/a.png", OPTIONS)
    assert line.endswith(b"\n") and line.count(b"\n") == 1
    data = json.loads(line)
    assert data["custom_id"] == "42" and data["method"] == "POST"
    assert data["url"] == "/v1/chat/completions"
    assert data["body"]["model"] == "qwen-vl-ocr-latest"
    assert data["body"]["messages"][0]["content"][0]["image_url"]["url"].endswith("a.png")
    test_model = RecognizeOptions(model="batch-test-model", prompt="hi")
    assert json.loads(request_line("1", "https://x/y.png", test_model))["url"] == "/v1/chat/ds-test"


def _output(status: int, body: object, error: object = None) -> bytes:
    line = {
        "id": "batch_req_1",
        "custom_id": "7",
        "response": {"status_code": status, "request_id": "req-7", "body": body},
        "error": error,
    }
    return json.dumps(line).encode()


def test_an_output_line_becomes_a_result_with_usage_finish_reason_and_request_id() -> None:
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "model": "qwen-vl-ocr-latest",
        "choices": [{"index": 0, "finish_reason": "stop", "message": {"content": "TOTAL 12"}}],
        "usage": {"prompt_tokens": 100, "completion_tokens": 4, "total_tokens": 104},
    }
    outcome = parse_line(_output(200, body), OPTIONS)
    assert outcome.custom_id == "7" and outcome.error is None
    assert outcome.result is not None
    assert outcome.result.text == "TOTAL 12" and outcome.result.finish_reason == "stop"
    assert outcome.result.request_id == "req-7"
    assert outcome.result.usage is not None and outcome.result.usage.total_tokens == 104


@pytest.mark.parametrize(
    ("status", "code", "expected", "retryable"),
    [
        (500, "InternalError", ServerError, True),
        (429, "Throttling", RateLimitError, True),
        (400, "InvalidParameter", InvalidRequestError, False),
        (200, "InternalError", ServerError, True),  # no status of its own: from the code
    ],
)
def test_an_error_line_is_classified_like_a_realtime_error(
    status: int, code: str, expected: type[QwenError], retryable: bool
) -> None:
    body = {"error": {"message": "boom", "type": "x", "param": None, "code": code}}
    outcome = parse_line(_output(status, body, {"code": code, "message": "boom"}), OPTIONS)
    assert outcome.custom_id == "7" and outcome.result is None
    assert isinstance(outcome.error, expected)
    assert outcome.error.retryable is retryable
    assert outcome.error.code == code and outcome.error.request_id == "req-7"


@pytest.mark.parametrize("raw", [b"not json", b"[]", b'{"response": {}}', b'{"custom_id": 7}'])
def test_an_unreadable_line_has_no_custom_id(raw: bytes) -> None:
    assert parse_line(raw, OPTIONS).custom_id is None


def test_a_success_status_around_a_broken_body_is_a_protocol_error() -> None:
    outcome = parse_line(_output(200, {"choices": []}), OPTIONS)
    assert isinstance(outcome.error, ProtocolError)


def test_a_batch_object_gives_its_status_counts_files_and_first_error() -> None:
    batch = parse_batch(
        {
            "id": "batch_1",
            "status": "failed",
            "input_file_id": "file-1",
            "output_file_id": None,
            "error_file_id": None,
            "request_counts": {"total": 3, "completed": 0, "failed": 0},
            "errors": {"data": [{"code": "duplicate_custom_id", "message": "1 twice"}]},
        }
    )
    assert batch.status == ProviderStatus.FAILED
    assert batch.counts.total == 3 and batch.input_file_id == "file-1"
    assert batch.error == "duplicate_custom_id: 1 twice"
    with pytest.raises(ProtocolError):
        parse_batch({"id": "b", "status": "sleeping"})
    with pytest.raises(ProtocolError):
        parse_batch({"status": "completed"})
