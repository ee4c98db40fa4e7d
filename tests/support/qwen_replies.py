"""Scripted Qwen-OCR answers for the client tests over a real socket: one KIE answer, plain
and streamed, on both APIs, and a runner that records each call's result or error."""

from __future__ import annotations

import io
import json
from typing import Any

from PIL import Image

from qocr.qwen import QwenError, QwenOCRClient, Timeouts
from qocr.qwen.catalog import Api
from tests.support.qwen_scripted_server import Reply

API_KEY = "sk-INTEGRATION-5a4b3c2d1e"
TIMEOUTS = Timeouts(connect=2.0, read=5.0, stream_idle=2.0, write=2.0, pool=2.0)
KV = {"发票代码": "142011726001", "buyer_name": "Cai Yingshi", "total": "230769.23"}
KIE_TEXT = "```json\n" + json.dumps(KV, ensure_ascii=False, indent=4) + "\n```"
USAGE_NATIVE = {
    "input_tokens": 926,
    "output_tokens": 72,
    "image_tokens": 754,
    "input_tokens_details": {"image_tokens": 754, "text_tokens": 172},
    "output_tokens_details": {"text_tokens": 72},
    "total_tokens": 998,
}
USAGE_COMPAT = {
    "prompt_tokens": 926,
    "completion_tokens": 72,
    "total_tokens": 998,
    "prompt_tokens_details": {"image_tokens": 754, "text_tokens": 172},
    "completion_tokens_details": {"text_tokens": 72},
}


def png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (689, 487), "white").save(buffer, "PNG")
    return buffer.getvalue()


def pieces(text: str, size: int = 9) -> list[str]:
    return [text[i : i + size] for i in range(0, len(text), size)]


def plain_reply(api: str) -> Reply:
    if api == "compatible":
        return Reply.json(
            {
                "id": "chatcmpl-1",
                "object": "chat.completion",
                "model": "qwen-vl-ocr-latest",
                "choices": [
                    {
                        "index": 0,
                        "finish_reason": "stop",
                        "message": {"role": "assistant", "content": KIE_TEXT},
                    }
                ],
                "usage": USAGE_COMPAT,
            }
        )
    return Reply.json(
        {
            "request_id": "req-1",
            "output": {
                "choices": [
                    {
                        "finish_reason": "stop",
                        "message": {
                            "role": "assistant",
                            "content": [{"text": KIE_TEXT, "ocr_result": {"kv_result": KV}}],
                        },
                    }
                ]
            },
            "usage": USAGE_NATIVE,
        }
    )


def stream_reply(api: str) -> Reply:
    events: list[str] = []
    parts = pieces(KIE_TEXT)
    if api == "compatible":
        for part in parts:
            chunk = {
                "id": "chatcmpl-1",
                "object": "chat.completion.chunk",
                "model": "qwen-vl-ocr-latest",
                "choices": [{"index": 0, "delta": {"content": part}, "finish_reason": None}],
            }
            events.append(f"data: {json.dumps(chunk, ensure_ascii=False)}\n\n")
        last = {"index": 0, "delta": {"content": ""}, "finish_reason": "stop"}
        head = {"id": "chatcmpl-1", "model": "qwen-vl-ocr-latest"}
        events.append(f"data: {json.dumps({**head, 'choices': [last]})}\n\n")
        events.append(f"data: {json.dumps({**head, 'choices': [], 'usage': USAGE_COMPAT})}\n\n")
        events.append("data: [DONE]\n\n")
    else:
        for i, part in enumerate(parts, 1):
            is_last = i == len(parts)
            content: dict[str, Any] = {"text": part}
            if is_last:
                content["ocr_result"] = {"kv_result": KV}
            data = {
                "output": {
                    "choices": [
                        {
                            "message": {"role": "assistant", "content": [content]},
                            "finish_reason": "stop" if is_last else "null",
                        }
                    ]
                },
                "usage": USAGE_NATIVE,
                "request_id": "req-1",
            }
            payload = json.dumps(data, ensure_ascii=False)
            events.append(f"id:{i}\nevent:result\n:HTTP_STATUS/200\ndata:{payload}\n\n")
    return Reply.sse("".join(events).encode(), piece=37, delay_between=0.002)


def run_calls(
    api: Api, base_url: str, calls: list[dict[str, Any]], timeouts: Timeouts = TIMEOUTS
) -> list[Any]:
    """Run ``calls`` on one client; each outcome is a result or the error raised."""
    outcomes: list[Any] = []
    with QwenOCRClient(API_KEY, api=api, base_url=base_url, timeout=timeouts) as client:
        for call in calls:
            try:
                outcomes.append(client.recognize(**call))
            except QwenError as exc:
                outcomes.append(exc)
    return outcomes
