"""The client on both APIs over a real loopback socket.

A plain answer and a streamed answer of the same text must give identical results; the raw
requests must carry what the seed documents.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import pytest
from PIL import Image

from qocr.qwen import OCRResult, QwenError, QwenOCRClient, Timeouts, Usage
from tests.integration.qwen_scripted_server import Reply, ScriptedServer

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


def run_calls(api: str, base_url: str, calls: list[dict[str, Any]]) -> list[Any]:
    """Run ``calls`` on one client; each outcome is a result or the error raised."""
    outcomes: list[Any] = []
    with QwenOCRClient(API_KEY, api=api, base_url=base_url, timeout=TIMEOUTS) as client:  # type: ignore[arg-type]
        for call in calls:
            try:
                outcomes.append(client.recognize(**call))
            except QwenError as exc:
                outcomes.append(exc)
    return outcomes


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as scripted:
        yield scripted


APIS = ["compatible", "dashscope"]


@pytest.mark.parametrize("api", APIS)
def test_plain_and_streamed_answers_are_identical(server: ScriptedServer, api: str) -> None:
    server.script(plain_reply(api), stream_reply(api))
    chunks: list[str] = []
    common = {"image": png(), "model": "qwen-vl-ocr-latest", "task": "key_information_extraction"}
    plain, streamed = run_calls(
        api, server.base_url, [common, {**common, "stream": True, "on_chunk": chunks.append}]
    )
    assert isinstance(plain, OCRResult), plain
    assert streamed == plain
    assert "".join(chunks) == KIE_TEXT and len(chunks) > 1
    assert plain.kv_result == KV
    assert plain.parsed == KV
    assert plain.usage == Usage(926, 72, 754, 172, 998)
    assert plain.finish_reason == "stop"


def test_raw_requests_carry_the_documented_fields(server: ScriptedServer) -> None:
    server.script(plain_reply("compatible"), stream_reply("dashscope"))
    image = png()
    run_calls(
        "compatible",
        server.base_url,
        [
            {
                "image": image,
                "model": "qwen-vl-ocr-latest",
                "prompt": "read",
                "max_pixels": 1048576,
                "top_k": 1,
            }
        ],
    )
    run_calls(
        "dashscope",
        server.base_url,
        [
            {
                "image": image,
                "model": "qwen-vl-ocr-latest",
                "task": "key_information_extraction",
                "result_schema": {"total": ""},
                "enable_rotate": True,
                "stream": True,
            }
        ],
    )
    compat, native = server.requests
    assert (compat.method, compat.path) == ("POST", "/compatible-mode/v1/chat/completions")
    assert compat.headers["Authorization"] == f"Bearer {API_KEY}"
    assert compat.headers["Content-Type"] == "application/json"
    body = compat.json()
    image_part, text_part = body["messages"][0]["content"]
    assert image_part["image_url"]["url"].startswith("data:image/png;base64,")
    assert (image_part["max_pixels"], text_part, body["top_k"]) == (
        1048576,
        {"type": "text", "text": "read"},
        1,
    )
    assert native.path == "/api/v1/services/aigc/multimodal-generation/generation"
    assert native.headers["X-DashScope-SSE"] == "enable"
    body = native.json()
    assert body["input"]["messages"][0]["content"] == [
        {"image": image_part["image_url"]["url"], "enable_rotate": True}
    ]
    assert body["parameters"] == {
        "ocr_options": {
            "task": "key_information_extraction",
            "task_config": {"result_schema": {"total": ""}},
        },
        "incremental_output": True,
    }


def test_one_client_reuses_its_connection(server: ScriptedServer) -> None:
    server.script(plain_reply("compatible"), plain_reply("compatible"), stream_reply("compatible"))
    call = {"image": "https://example.com/a.png", "model": "qwen-vl-ocr-latest"}
    outcomes = run_calls("compatible", server.base_url, [call, call, {**call, "stream": True}])
    assert all(isinstance(o, OCRResult) for o in outcomes)
    assert len({r.client_port for r in server.requests}) == 1
