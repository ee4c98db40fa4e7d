"""The client on both APIs over a real loopback socket.

A plain answer and a streamed answer of the same text must give identical results; the raw
requests must carry what the seed documents.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from qocr.qwen import OCRResult, Usage
from qocr.qwen.catalog import Api
from tests.support.qwen_replies import (
    API_KEY,
    KIE_TEXT,
    KV,
    plain_reply,
    png,
    run_calls,
    stream_reply,
)
from tests.support.qwen_scripted_server import ScriptedServer


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as scripted:
        yield scripted


APIS: list[Api] = ["compatible", "dashscope"]


@pytest.mark.parametrize("api", APIS)
def test_plain_and_streamed_answers_are_identical(server: ScriptedServer, api: Api) -> None:
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
