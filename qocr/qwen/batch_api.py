"""Model Studio's Batch API, sans I/O: who it serves, input lines, and what comes back.

The OpenAI-compatible files + batches endpoints (``/compatible-mode/v1/files``,
``/compatible-mode/v1/batches``): one JSONL file of requests per provider batch, each line
``{"custom_id", "method": "POST", "url": "/v1/chat/completions", "body": {...}}`` with a
unique ``custom_id`` and one model per file, at most 50,000 lines, 500 MB, 6 MB a line.
Successful requests are billed at half the realtime price. It serves the Qwen-OCR models
in the China (Beijing) deployment only (Alibaba's Batch pages, checked January 2026); the
test model ``batch-test-model`` answers a fixed reply at no charge on its own endpoint.

Output lines: ``{"id", "custom_id", "response": {"status_code", "request_id", "body"},
"error"}``; a failed request's line carries ``error: {code, message}`` (error file).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from qocr.qwen.batch_limits import ENDPOINT, TEST_ENDPOINT, TEST_MODEL
from qocr.qwen.catalog import Api, Region
from qocr.qwen.classify import error_from_response
from qocr.qwen.errors import ProtocolError, QwenError
from qocr.qwen.options import RecognizeOptions
from qocr.qwen.parse import parse_body, provider_string
from qocr.qwen.request import compatible_body
from qocr.qwen.result import OCRResult

FILES_PATH = "/compatible-mode/v1/files"
BATCHES_PATH = "/compatible-mode/v1/batches"

BATCH_REGIONS: tuple[Region, ...] = ("cn",)
# "文字提取: qwen-vl-ocr, qwen-vl-ocr-latest" in the list of models the Batch API serves.
BATCH_MODELS = frozenset({"qwen-vl-ocr", "qwen-vl-ocr-latest", TEST_MODEL})


class ProviderStatus(StrEnum):
    """A provider batch's status, as the Batch API spells it."""

    VALIDATING = "validating"
    FAILED = "failed"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    EXPIRED = "expired"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"


TERMINAL_STATUSES = frozenset(
    {
        ProviderStatus.FAILED,
        ProviderStatus.COMPLETED,
        ProviderStatus.EXPIRED,
        ProviderStatus.CANCELLED,
    }
)


def unsupported_reason(
    api: Api | str, region: Region | str, model: str, stream: bool
) -> str | None:
    """Why a batch with these settings cannot go through the Batch API; None when it can."""
    if api != "compatible":
        return "the Batch API is OpenAI-compatible only: use --api compatible"
    if stream:
        return "the Batch API does not stream: drop --stream"
    if region not in BATCH_REGIONS:
        return (
            f"the Batch API serves Qwen-OCR in the China (Beijing) region only "
            f"(QOCR_REGION=cn), not {region!r}"
        )
    if model not in BATCH_MODELS:
        served = ", ".join(sorted(BATCH_MODELS))
        return f"the Batch API does not serve model {model!r} (served: {served})"
    return None


def endpoint_for(model: str) -> str:
    """The ``url`` of every line (and the batch's ``endpoint``) for ``model``."""
    return TEST_ENDPOINT if model == TEST_MODEL else ENDPOINT


def request_line(custom_id: str, image_url: str, options: RecognizeOptions) -> bytes:
    """One JSONL line (newline included) asking for ``image_url`` with ``options``."""
    line = {
        "custom_id": custom_id,
        "method": "POST",
        "url": endpoint_for(options.model),
        "body": compatible_body(image_url, options),
    }
    return json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


@dataclass(frozen=True)
class RequestCounts:
    total: int = 0
    completed: int = 0
    failed: int = 0


@dataclass(frozen=True)
class ProviderBatch:
    """What a batch object says (``GET …/batches/{id}``), as far as qocr needs it."""

    id: str
    status: ProviderStatus
    input_file_id: str | None
    output_file_id: str | None
    error_file_id: str | None
    counts: RequestCounts
    error: str | None = None  # the first validation error of a failed batch


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def parse_batch(data: Any) -> ProviderBatch:
    """A batch object; :class:`ProtocolError` when it is not one."""
    if not isinstance(data, Mapping) or not isinstance(data.get("id"), str):
        raise ProtocolError("unexpected batch object: no id")
    try:
        status = ProviderStatus(str(data.get("status")))
    except ValueError:
        raise ProtocolError(f"unknown batch status {data.get('status')!r}") from None
    counts = data.get("request_counts") or {}
    errors = (
        (data.get("errors") or {}).get("data") if isinstance(data.get("errors"), Mapping) else None
    )
    first = errors[0] if isinstance(errors, list) and errors else None
    error = None
    if isinstance(first, Mapping):
        error = f"{first.get('code') or 'error'}: {first.get('message') or ''}".strip()
    return ProviderBatch(
        id=data["id"],
        status=status,
        input_file_id=provider_string(data.get("input_file_id")),
        output_file_id=provider_string(data.get("output_file_id")),
        error_file_id=provider_string(data.get("error_file_id")),
        counts=RequestCounts(
            _count(counts.get("total")),
            _count(counts.get("completed")),
            _count(counts.get("failed")),
        ),
        error=error,
    )


@dataclass(frozen=True)
class LineOutcome:
    """One output or error line: whose it is, and its result or its error.

    ``custom_id`` is None for a line that could not be read (logged and skipped).
    """

    custom_id: str | None
    result: OCRResult | None = None
    error: QwenError | None = None


def parse_line(raw: bytes | str, options: RecognizeOptions) -> LineOutcome:
    """One line of an output or error file, read like a realtime answer to ``options``."""
    try:
        data = json.loads(raw)
    except ValueError:
        return LineOutcome(None)
    if not isinstance(data, Mapping) or not isinstance(data.get("custom_id"), str):
        return LineOutcome(None)
    custom_id = data["custom_id"]
    response: Mapping[str, Any] = data.get("response") or {}
    if not isinstance(response, Mapping):
        response = {}
    status = response.get("status_code")
    status = status if isinstance(status, int) and not isinstance(status, bool) else None
    request_id = provider_string(response.get("request_id"))
    body = response.get("body")
    error = data.get("error")
    if error or status is None or status >= 400:
        return LineOutcome(custom_id, error=line_error(status, body, error, request_id))
    try:
        result = parse_body(
            "compatible", body, task=options.task, request_id=request_id, model=options.model
        )
    except ProtocolError as exc:
        exc.request_id = request_id
        return LineOutcome(custom_id, error=exc)
    return LineOutcome(custom_id, result=result)


def line_error(status: int | None, body: Any, error: Any, request_id: str | None) -> QwenError:
    """The error of a failed line, classified as a realtime answer with that status would be."""
    if isinstance(error, Mapping) and (error.get("code") or error.get("message")):
        document: Any = {"error": dict(error), "request_id": request_id}
    elif isinstance(body, Mapping):
        document = body
    else:
        document = {"error": {"message": "the batch line failed without a reason"}}
    return error_from_response(
        status if status is not None and status >= 400 else None, document, request_id=request_id
    )
