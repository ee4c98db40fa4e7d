"""DashScope (native) bodies and SSE events, as in the seed's sample and our digest.

Non-streamed: ``{"output": {"text": null, "finish_reason": null, "choices":
[{"finish_reason", "message": {"role", "content": [{"ocr_result"?, "text"}]}, "logprobs"?}]},
"usage": {..., "characters": 0, ...}, "request_id"}`` (``output.text``,
``output.finish_reason`` and ``usage.characters`` as the seed shows them: always null, null
and 0; ``logprobs`` only when asked for). Streamed (``X-DashScope-SSE: enable``), the same
body per event, one block per event, no space after the colons::

    id:1
    event:result
    :HTTP_STATUS/200
    data:{"output":{...,"finish_reason":"null"}],"usage":{...},"request_id":"..."}

``finish_reason`` is the string ``"null"`` until the last event. Text is the delta with
``incremental_output``, the whole text so far without. Errors: ``{"request_id", "code",
"message"}``, and inside a stream an ``event:error`` block carrying that body.
"""

from __future__ import annotations

import json
from typing import Any

from qocr.emulator.completion import Completion, Usage
from qocr.emulator.errors import ApiError
from qocr.emulator.logprobs import logprobs_body
from qocr.emulator.textunits import chunk_tokens, count_tokens

SSE_CONTENT_TYPE = "text/event-stream;charset=UTF-8"


def dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def usage_body(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "characters": 0,  # "currently always 0" (the seed)
        "image_tokens": usage.image_tokens,
        "input_tokens_details": {
            "image_tokens": usage.image_tokens,
            "text_tokens": usage.text_tokens,
        },
        "output_tokens_details": {"text_tokens": usage.output_tokens},
        "total_tokens": usage.total_tokens,
    }


def _content(text: str, ocr_result: dict[str, Any] | None) -> list[dict[str, Any]]:
    item: dict[str, Any] = {}
    if ocr_result is not None:
        item["ocr_result"] = ocr_result
    item["text"] = text
    return [item]


def _body(
    completion: Completion,
    text: str,
    finish_reason: str,
    usage: Usage,
    ocr_result: dict[str, Any] | None,
    logprobs: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    choice: dict[str, Any] = {
        "finish_reason": finish_reason,
        "message": {"role": "assistant", "content": _content(text, ocr_result)},
    }
    if logprobs is not None:
        choice["logprobs"] = logprobs_body(logprobs)
    return {
        # "text" is "currently always null"; the top-level finish_reason is null too, the
        # choice's is the real one (the seed's sample).
        "output": {"text": None, "finish_reason": None, "choices": [choice]},
        "usage": usage_body(usage),
        "request_id": completion.request_id,
    }


def response_body(completion: Completion) -> dict[str, Any]:
    return _body(
        completion,
        completion.text,
        completion.finish_reason,
        completion.usage,
        completion.ocr_result,
        completion.logprobs,
    )


def event(index: int, body: dict[str, Any], *, kind: str = "result", status: int = 200) -> bytes:
    return f"id:{index}\nevent:{kind}\n:HTTP_STATUS/{status}\ndata:{dumps(body)}\n\n".encode()


def stream_events(completion: Completion, *, chunk_tokens_n: int, incremental: bool) -> list[bytes]:
    """Every SSE event of a streamed answer, in order."""
    pieces = chunk_tokens(completion.text, chunk_tokens_n) or [""]
    events = []
    sent = ""
    for index, piece in enumerate(pieces, start=1):
        sent += piece
        last = index == len(pieces)
        usage = Usage(
            image_tokens=completion.usage.image_tokens,
            text_tokens=completion.usage.text_tokens,
            output_tokens=count_tokens(sent),
        )
        tokens = (
            None
            if completion.logprobs is None
            else completion.logprobs[(index - 1) * chunk_tokens_n : index * chunk_tokens_n]
        )
        body = _body(
            completion,
            piece if incremental else sent,
            completion.finish_reason if last else "null",
            usage,
            completion.ocr_result if last else None,
            tokens,
        )
        events.append(event(index, body))
    return events


def error_body(error: ApiError, request_id: str) -> dict[str, Any]:
    return {"request_id": request_id, "code": error.spec.code, "message": error.spec.message}


def error_event(index: int, error: ApiError, request_id: str) -> bytes:
    return event(index, error_body(error, request_id), kind="error", status=error.status)
