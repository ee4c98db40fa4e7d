"""OpenAI-compatible bodies, field for field as in the seed's samples (nulls included).

Non-streamed: a ``chat.completion``. Streamed: ``data: {chat.completion.chunk}`` events — a
first chunk with ``role: "assistant"`` and empty content, content chunks, a last chunk with
empty content and the ``finish_reason`` (null until then), a usage chunk with ``choices: []``
when ``stream_options.include_usage``, and ``data: [DONE]``. ``logprobs`` is null unless
asked for; then ``{"content": [...]}`` (each chunk carries its own tokens'). Errors:
``{"error": {"message", "type", "param", "code"}, "request_id"}``.
"""

from __future__ import annotations

import json
from typing import Any

from qocr.emulator.completion import Completion, Usage
from qocr.emulator.errors import ApiError
from qocr.emulator.logprobs import logprobs_body
from qocr.emulator.textunits import chunk_tokens

DONE = b"data: [DONE]\n\n"


def dumps(value: object) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def usage_body(usage: Usage) -> dict[str, Any]:
    return {
        "completion_tokens": usage.output_tokens,
        "prompt_tokens": usage.input_tokens,
        "total_tokens": usage.total_tokens,
        "completion_tokens_details": {
            "accepted_prediction_tokens": None,
            "audio_tokens": None,
            "reasoning_tokens": None,
            "rejected_prediction_tokens": None,
            "text_tokens": usage.output_tokens,
        },
        "prompt_tokens_details": {
            "audio_tokens": None,
            "cached_tokens": None,
            "image_tokens": usage.image_tokens,
            "text_tokens": usage.text_tokens,
        },
    }


def completion_body(completion: Completion) -> dict[str, Any]:
    return {
        "id": completion.completion_id,
        "choices": [
            {
                "finish_reason": completion.finish_reason,
                "index": 0,
                "logprobs": logprobs_body(completion.logprobs),
                "message": {
                    "content": completion.text,
                    "refusal": None,
                    "role": "assistant",
                    "annotations": None,
                    "audio": None,
                    "function_call": None,
                    "tool_calls": None,
                },
            }
        ],
        "created": completion.created,
        "model": completion.model,
        "object": "chat.completion",
        "service_tier": None,
        "system_fingerprint": None,
        "usage": usage_body(completion.usage),
    }


def chunk_body(
    completion: Completion,
    content: str,
    *,
    role: str | None = None,
    finish_reason: str | None = None,
    logprobs: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    return {
        "id": completion.completion_id,
        "choices": [
            {
                "delta": {
                    "content": content,
                    "function_call": None,
                    "refusal": None,
                    "role": role,
                    "tool_calls": None,
                },
                "finish_reason": finish_reason,
                "index": 0,
                "logprobs": logprobs_body(logprobs),
            }
        ],
        "created": completion.created,
        "model": completion.model,
        "object": "chat.completion.chunk",
        "service_tier": None,
        "system_fingerprint": None,
        "usage": None,
    }


def usage_chunk_body(completion: Completion) -> dict[str, Any]:
    body = chunk_body(completion, "")
    body["choices"] = []
    body["usage"] = usage_body(completion.usage)
    return body


def sse(body: dict[str, Any]) -> bytes:
    return f"data: {dumps(body)}\n\n".encode()


def stream_events(
    completion: Completion, *, chunk_tokens_n: int, include_usage: bool
) -> list[bytes]:
    """Every SSE event of a streamed answer, in order, ``[DONE]`` included."""
    events = [sse(chunk_body(completion, "", role="assistant"))]
    for index, piece in enumerate(chunk_tokens(completion.text, chunk_tokens_n)):
        tokens = (
            None
            if completion.logprobs is None
            else completion.logprobs[index * chunk_tokens_n : (index + 1) * chunk_tokens_n]
        )
        events.append(sse(chunk_body(completion, piece, logprobs=tokens)))
    events.append(sse(chunk_body(completion, "", finish_reason=completion.finish_reason)))
    if include_usage:
        events.append(sse(usage_chunk_body(completion)))
    events.append(DONE)
    return events


def error_body(error: ApiError, request_id: str) -> dict[str, Any]:
    spec = error.spec
    return {
        "error": {
            "message": spec.compatible_message,
            "type": spec.compatible_type,
            "param": None,
            "code": spec.compatible_code,
        },
        "request_id": request_id,
    }


def error_code(error: ApiError) -> str:
    """The code this API shows for ``error`` (its type when the code is null)."""
    return error.spec.compatible_code or error.spec.compatible_type
