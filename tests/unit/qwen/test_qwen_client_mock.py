"""Both clients over httpx.MockTransport: wiring, timeouts, error mapping, no key leaks."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from pydantic import SecretStr

from qocr.qwen import (
    APIConnectionError,
    APITimeoutError,
    ImageError,
    OptionsError,
    ProtocolError,
    QwenError,
    QwenOCRClient,
    RecognizeOptions,
    Timeouts,
)
from tests.support.qwen_samples import API_KEY, make_image

Handler = Callable[[httpx.Request], httpx.Response]
COMPAT_OK = {
    "id": "chatcmpl-1",
    "model": "qwen-vl-ocr-latest",
    "choices": [
        {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "Hi"}}
    ],
    "usage": {"prompt_tokens": 10, "completion_tokens": 1, "total_tokens": 11},
}


class Recorder:
    def __init__(self, respond: Handler) -> None:
        self.respond = respond
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return self.respond(request)


def client(handler: Handler, **kwargs: Any) -> QwenOCRClient:
    kwargs.setdefault("base_url", "http://emulator.test")
    return QwenOCRClient(API_KEY, transport=httpx.MockTransport(handler), **kwargs)


def test_request_wiring_and_explicit_timeouts() -> None:
    recorder = Recorder(lambda r: httpx.Response(200, json=COMPAT_OK))
    timeouts = Timeouts(connect=1.0, read=50.0, stream_idle=5.0, write=2.0, pool=3.0)
    png = make_image(64, 32)
    with client(recorder, timeout=timeouts) as c:
        result = c.recognize(png, model="qwen-vl-ocr-latest", prompt="read")
    request = recorder.requests[0]
    assert str(request.url) == "http://emulator.test/compatible-mode/v1/chat/completions"
    assert request.headers["authorization"] == f"Bearer {API_KEY}"
    assert request.extensions["timeout"] == {
        "connect": 1.0,
        "read": 50.0,
        "write": 2.0,
        "pool": 3.0,
    }
    body = json.loads(request.content)
    assert body["messages"][0]["content"][0]["image_url"]["url"].startswith(
        "data:image/png;base64,"
    )
    assert result.text == "Hi"


def test_streams_use_the_idle_timeout_and_call_on_chunk() -> None:
    sse = (
        'data: {"id":"c","choices":[{"delta":{"content":"H"},"finish_reason":null}]}\n\n'
        'data: {"id":"c","choices":[{"delta":{"content":"i"},"finish_reason":"stop"}]}\n\n'
        'data: {"id":"c","choices":[],"usage":{"prompt_tokens":10,"completion_tokens":1}}\n\n'
        "data: [DONE]\n\n"
    )
    recorder = Recorder(
        lambda r: httpx.Response(200, headers={"content-type": "text/event-stream"}, text=sse)
    )
    chunks: list[str] = []
    with client(recorder, timeout=Timeouts(read=50.0, stream_idle=5.0)) as c:
        result = c.recognize(
            "https://x/y.png", model="qwen-vl-ocr-latest", stream=True, on_chunk=chunks.append
        )
    assert recorder.requests[0].extensions["timeout"]["read"] == 5.0
    assert (chunks, result.text, result.finish_reason) == (["H", "i"], "Hi", "stop")


def test_native_stream_request_headers() -> None:
    recorder = Recorder(
        lambda r: httpx.Response(401, json={"code": "InvalidApiKey", "message": "no"})
    )
    with client(recorder, api="dashscope") as c, pytest.raises(QwenError):
        c.recognize("https://x/y.png", model="qwen-vl-ocr-latest", stream=True)
    request = recorder.requests[0]
    assert request.headers["x-dashscope-sse"] == "enable"
    assert json.loads(request.content)["parameters"] == {"incremental_output": True}


def test_json_answer_to_a_stream_request_is_still_a_result() -> None:
    with client(lambda r: httpx.Response(200, json=COMPAT_OK)) as c:
        chunks: list[str] = []
        result = c.recognize(
            "https://x/y.png", model="qwen-vl-ocr-latest", stream=True, on_chunk=chunks.append
        )
    assert (result.text, chunks) == ("Hi", ["Hi"])


def test_recognize_with_stored_options_equals_recognize() -> None:
    with client(lambda r: httpx.Response(200, json=COMPAT_OK)) as c:
        options = RecognizeOptions.from_dict({"model": "qwen-vl-ocr-latest", "max_tokens": 10})
        assert c.recognize_with("https://x/y.png", options) == c.recognize(
            "https://x/y.png", model="qwen-vl-ocr-latest", max_tokens=10
        )


def test_region_hosts_and_settings_secret() -> None:
    recorder = Recorder(lambda r: httpx.Response(200, json=COMPAT_OK))
    c = QwenOCRClient(SecretStr(API_KEY), region="us", transport=httpx.MockTransport(recorder))
    c.recognize("https://x/y.png", model="qwen-vl-ocr-latest")
    c.close()
    assert str(recorder.requests[0].url).startswith("https://dashscope-us.aliyuncs.com/")
    assert API_KEY not in repr(c)


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"api": "grpc"}, "api must be"),
        ({"region": "eu"}, "region must be"),
        ({"base_url": "ftp://x"}, "base_url"),
        ({"timeout": 0}, "timeout"),
    ],
)
def test_bad_client_configuration(kwargs: dict[str, Any], words: str) -> None:
    with pytest.raises(OptionsError, match=words):
        QwenOCRClient(API_KEY, **kwargs)


def raising(exc: Exception) -> Handler:
    def handler(request: httpx.Request) -> httpx.Response:
        raise exc

    return handler


@pytest.mark.parametrize(
    ("handler", "cls", "code"),
    [
        (raising(httpx.ReadTimeout("timed out")), APITimeoutError, "read_timeout"),
        (raising(httpx.ConnectTimeout("timed out")), APITimeoutError, "connect_timeout"),
        (raising(httpx.PoolTimeout("timed out")), APITimeoutError, "timeout"),
        (raising(httpx.ConnectError("refused")), APIConnectionError, "connection_error"),
        (
            raising(httpx.RemoteProtocolError("peer closed")),
            APIConnectionError,
            "connection_dropped",
        ),
        (lambda r: httpx.Response(200, text="<html>oops</html>"), ProtocolError, "protocol_error"),
    ],
)
def test_transport_failures_map_to_retryable_errors(
    handler: Handler, cls: type[QwenError], code: str
) -> None:
    with client(handler) as c, pytest.raises(cls) as caught:
        c.recognize("https://x/y.png", model="qwen-vl-ocr-latest")
    assert caught.value.code == code
    assert caught.value.retryable


def leaky(request: httpx.Request) -> httpx.Response:
    """A server that echoes the Authorization header into every error message."""
    echoed = request.headers["authorization"]
    scenario = json.loads(request.content)["max_tokens"]
    statuses = {1: 400, 2: 401, 3: 403, 4: 404, 5: 429, 6: 500, 7: 503}
    if scenario in statuses:
        return httpx.Response(statuses[scenario], json={"code": "X", "message": f"bad {echoed}"})
    if scenario == 8:
        return httpx.Response(
            429, json={"code": "X", "message": f"Free allocated quota exceeded. {echoed}"}
        )
    if scenario == 9:
        return httpx.Response(200, text=f"not json {echoed}")
    if scenario == 10:
        raise httpx.ReadTimeout(f"timed out {echoed}")
    if scenario == 11:
        raise httpx.ConnectError(f"refused {echoed}")
    return httpx.Response(
        200, headers={"content-type": "text/event-stream"}, text=f"data: garbage {echoed}\n\n"
    )


def test_api_key_is_in_no_error_of_any_class() -> None:
    seen: set[type[QwenError]] = set()
    with client(leaky) as c:
        for scenario in range(1, 13):
            with pytest.raises(QwenError) as caught:
                c.recognize(
                    "https://x/y.png",
                    model="qwen-vl-ocr-latest",
                    max_tokens=scenario,
                    stream=scenario == 12,
                )
            seen.add(type(caught.value))
            for text in (str(caught.value), repr(caught.value), repr(caught.value.args)):
                assert API_KEY not in text
        bad_calls: list[Callable[[], object]] = [
            lambda: c.recognize(b"", model="qwen-vl-ocr-latest"),
            lambda: c.recognize("https://x/y.png", model="qwen-vl-ocr-latest", max_tokens=99999),
        ]
        for bad_call in bad_calls:
            with pytest.raises((ImageError, OptionsError)) as local:
                bad_call()
            assert API_KEY not in str(local.value) + repr(local.value)
    assert len(seen) == 10  # 400..503 classes, quota, protocol, timeout, connection
