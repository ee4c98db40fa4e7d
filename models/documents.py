"""An item as the JSON object every export writes: ``qocr results`` lines, ``qocr show`` and the
scheduled exports to S3 (one shape, kept stable in docs/cli-json.md).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from qocr.models.report_records import ItemRow
from qocr.redact import redact_text

# The result's fields, all None for an item without a result.
RESULT_FIELDS = (
    "text",
    "kv_result",
    "words_info",
    "parsed",
    "finish_reason",
    "request_id",
    "model",
    "latency_ms",
    "cached_from",
)


def iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def item_json(row: ItemRow, secret: str | None) -> dict[str, Any]:
    """One item and its result as a JSON object; error messages have ``secret`` masked."""
    result = row.result
    document: dict[str, Any] = {
        "item_id": row.id,
        "batch_id": row.batch_id,
        "source": row.source,
        "document_id": row.document_id,
        "page": row.page,
        "state": row.state.value,
        "attempts": row.attempts,
        "error_code": row.error_code,
        "error_message": redact_text(row.error_message, secret) if row.error_message else None,
        "created_at": iso(row.created_at),
        "finished_at": iso(row.finished_at),
    }
    if result is None:
        return {**document, **dict.fromkeys(RESULT_FIELDS), "usage": None}
    usage = result.usage
    return {
        **document,
        "text": result.text,
        "kv_result": result.kv_result,
        "words_info": result.words_info,
        "parsed": result.parsed,
        "finish_reason": result.finish_reason,
        "request_id": result.request_id,
        "model": result.model,
        "latency_ms": result.latency_ms,
        "cached_from": result.cached_from,
        "usage": {
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "image_tokens": usage.image_tokens,
            "total_tokens": usage.total_tokens,
        },
    }
