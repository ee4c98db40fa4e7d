"""Pure parsing of answers: non-streamed bodies of both APIs, usage, fenced blocks, OCR fields.

Both APIs end in :func:`build_result`, which the stream decoder uses too, so a streamed call
and a plain call of the same answer give equal :class:`OCRResult` values.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from qocr.qwen.caps import MAX_FIELD_CHARS, cap_chars
from qocr.qwen.catalog import Api
from qocr.qwen.errors import ProtocolError
from qocr.qwen.result import OCRResult, Usage, WordInfo
from qocr.qwen.tasks import OUTPUT_KIND, Task

# An opening fence with an optional language; the closing fence may be missing when the
# answer was cut at max_tokens.
_FENCE = re.compile(
    r"```[ \t]*(?P<lang>[A-Za-z0-9_+-]*)[ \t]*\r?\n(?P<body>.*?)(?:\r?\n)?(?:```|\Z)", re.S
)
_REQUEST_ID_HEADERS = ("x-request-id", "x-dashscope-request-id", "request-id")


def finish_reason(value: Any) -> str | None:
    """The provider's finish reason, with native streams' literal "null" read as None."""
    if value is None or value == "null" or value == "":
        return None
    return str(value)


def provider_string(value: Any) -> str | None:
    """A string the provider chose (request id, model, finish reason), capped for storage."""
    if value is None or value == "":
        return None
    return cap_chars(str(value), MAX_FIELD_CHARS)


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def normalize_usage(raw: Any) -> Usage | None:
    """Map native (input/output_tokens) or compatible (prompt/completion_tokens) usage."""
    if not isinstance(raw, Mapping):
        return None
    input_details = raw.get("input_tokens_details") or raw.get("prompt_tokens_details") or {}
    input_tokens = _int(raw.get("input_tokens")) or _int(raw.get("prompt_tokens")) or 0
    output_tokens = _int(raw.get("output_tokens")) or _int(raw.get("completion_tokens")) or 0
    image_tokens = _int(raw.get("image_tokens")) or _int(input_details.get("image_tokens")) or 0
    text_tokens = _int(input_details.get("text_tokens"))
    if text_tokens is None:
        text_tokens = max(input_tokens - image_tokens, 0)
    total = _int(raw.get("total_tokens")) or input_tokens + output_tokens
    return Usage(input_tokens, output_tokens, image_tokens, text_tokens, total)


def split_fenced(text: str) -> tuple[str, str] | None:
    """(language, body) of the first fenced block in ``text``, or None."""
    match = _FENCE.search(text)
    if match is None:
        return None
    return match.group("lang").lower(), match.group("body")


def _decode_json(body: str) -> Any:
    try:
        return json.loads(body)
    except ValueError:
        return None


def parse_structured(text: str, task: Task | None) -> Any:
    """The ``parsed`` value: the fenced body (JSON decoded), or the whole answer for LaTeX tasks."""
    kind = OUTPUT_KIND.get(task) if task else None
    fenced = split_fenced(text)
    if fenced is not None:
        lang, body = fenced
        return _decode_json(body) if lang == "json" or (not lang and kind == "json") else body
    stripped = text.strip()
    if kind == "json" or (kind is None and stripped[:1] in ("{", "[")):
        return _decode_json(stripped) if stripped else None
    if kind in ("latex", "html") and stripped:
        return stripped
    return None


def _words(raw: Any) -> tuple[WordInfo, ...] | None:
    if not isinstance(raw, list):
        return None
    words = []
    for item in raw:
        if isinstance(item, Mapping) and isinstance(item.get("text"), str):
            words.append(
                WordInfo(
                    text=item["text"],
                    location=tuple(item.get("location") or ()),
                    rotate_rect=tuple(item.get("rotate_rect") or ()),
                )
            )
    return tuple(words) if words or not raw else None


def build_result(
    *,
    text: str,
    finish: str | None,
    usage: Usage | None,
    request_id: str | None,
    model: str | None,
    task: Task | None,
    ocr_result: Mapping[str, Any] | None = None,
    logprobs: dict[str, Any] | None = None,
) -> OCRResult:
    """Assemble the normalized result; OCR fields come from ``ocr_result`` or from the text."""
    parsed = parse_structured(text, task)
    ocr = ocr_result or {}
    kv_result = ocr.get("kv_result")
    if kv_result is None and task == "key_information_extraction":
        # The compatible API (and streams) carry KIE only as fenced JSON in the text.
        kv_result = parsed if isinstance(parsed, dict | list) else None
    words_info = _words(ocr.get("words_info"))
    if words_info is None and task == "advanced_recognition":
        words_info = _words(parsed)
    return OCRResult(
        text=text,
        finish_reason=provider_string(finish),
        usage=usage,
        request_id=provider_string(request_id),
        model=provider_string(model),
        kv_result=kv_result,
        words_info=words_info,
        parsed=parsed,
        logprobs=logprobs,
    )


def header_request_id(headers: Mapping[str, str]) -> str | None:
    """The request id a response header carries, if any."""
    lowered = {k.lower(): v for k, v in headers.items()}
    return next((lowered[h] for h in _REQUEST_ID_HEADERS if lowered.get(h)), None)


def load_json(body: bytes | str) -> Any:
    """Decode a JSON body; raise :class:`ProtocolError` when it is not JSON."""
    try:
        return json.loads(body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise ProtocolError(f"the answer is not JSON: {exc}") from None


def parse_body(
    api: Api,
    data: Any,
    *,
    task: Task | None,
    request_id: str | None = None,
    model: str | None = None,
) -> OCRResult:
    """Parse a decoded non-streamed success body of ``api``.

    ``request_id`` (from a header) and ``model`` (the one asked for) fill in what the body
    leaves out: native bodies name no model, compatible ones carry no request_id.
    """
    try:
        if api == "compatible":
            return _parse_compatible(data, task, request_id, model)
        return _parse_native(data, task, request_id, model)
    except (KeyError, IndexError, TypeError, AttributeError) as exc:
        raise ProtocolError(f"unexpected {api} answer shape: {exc!r}") from None


def _parse_compatible(
    data: Any, task: Task | None, request_id: str | None, model: str | None
) -> OCRResult:
    choice = data["choices"][0]
    content = choice["message"]["content"]
    return build_result(
        text=content if isinstance(content, str) else "",
        finish=finish_reason(choice.get("finish_reason")),
        usage=normalize_usage(data.get("usage")),
        request_id=request_id or data.get("request_id") or data.get("id"),
        model=data.get("model") or model,
        task=task,
        logprobs=choice.get("logprobs"),
    )


def native_content(message: Mapping[str, Any]) -> tuple[str, Mapping[str, Any] | None]:
    """The joined text items and the first ``ocr_result`` of a native message."""
    content = message.get("content") or []
    if isinstance(content, str):
        return content, None
    text = "".join(item["text"] for item in content if isinstance(item.get("text"), str))
    ocr = next((item["ocr_result"] for item in content if item.get("ocr_result")), None)
    return text, ocr


def _parse_native(
    data: Any, task: Task | None, request_id: str | None, model: str | None
) -> OCRResult:
    output = data["output"]
    choice = output["choices"][0]
    text, ocr = native_content(choice["message"])
    return build_result(
        text=text,
        finish=finish_reason(choice.get("finish_reason") or output.get("finish_reason")),
        usage=normalize_usage(data.get("usage")),
        request_id=data.get("request_id") or request_id,
        model=data.get("model") or model,
        task=task,
        ocr_result=ocr,
        logprobs=choice.get("logprobs"),
    )
