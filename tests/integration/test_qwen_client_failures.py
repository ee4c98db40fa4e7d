"""Failures over a real socket: error bodies, cut streams, timeouts."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator

import pytest

from qocr.qwen import (
    APIConnectionError,
    APITimeoutError,
    AuthenticationError,
    OCRResult,
    QuotaExceededError,
    RateLimitError,
    ServerError,
    Timeouts,
)
from qocr.qwen.catalog import Api
from tests.support.qwen_replies import API_KEY, run_calls, stream_reply
from tests.support.qwen_scripted_server import Reply, ScriptedServer

CALL = {"image": "https://example.com/scan.png", "model": "qwen-vl-ocr-latest"}


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as scripted:
        yield scripted


def test_error_bodies_map_to_the_tree(server: ScriptedServer) -> None:
    server.script(
        Reply.json(
            {
                "request_id": "r1",
                "code": "Throttling.RateQuota",
                "message": "Requests rate limit exceeded.",
            },
            status=429,
            headers={"Retry-After": "3"},
        ),
        Reply.json(
            {
                "error": {
                    "message": "Incorrect API key provided.",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": "invalid_api_key",
                },
                "request_id": "r2",
            },
            status=401,
        ),
        Reply.json(
            {
                "request_id": "r3",
                "code": "Arrearage",
                "message": "Access denied, please make sure your account is in good standing.",
            },
            status=400,
        ),
        Reply(status=502, headers={"Content-Type": "text/html"}, body=b"<html>Bad Gateway</html>"),
    )
    rate, auth, arrears, gateway = run_calls("compatible", server.base_url, [CALL] * 4)
    assert isinstance(rate, RateLimitError) and rate.retryable
    assert (rate.status, rate.code, rate.retry_after, rate.request_id) == (
        429,
        "Throttling.RateQuota",
        3.0,
        "r1",
    )
    assert isinstance(auth, AuthenticationError) and auth.stops_batch and not auth.retryable
    assert (auth.status, auth.code, auth.request_id) == (401, "invalid_api_key", "r2")
    assert isinstance(arrears, QuotaExceededError) and arrears.stops_batch
    assert isinstance(gateway, ServerError) and gateway.status == 502 and gateway.retryable
    for error in (rate, auth, arrears, gateway):
        assert API_KEY not in str(error) + repr(error)


def test_error_event_inside_a_native_stream(server: ScriptedServer) -> None:
    first = {
        "output": {
            "choices": [{"message": {"content": [{"text": "He"}]}, "finish_reason": "null"}]
        },
        "request_id": "r9",
    }
    failure = {"code": "InternalError.Algo", "message": "inference failed", "request_id": "r9"}
    body = (
        f"id:1\nevent:result\n:HTTP_STATUS/200\ndata:{json.dumps(first)}\n\n"
        f"id:2\nevent:error\n:HTTP_STATUS/500\ndata:{json.dumps(failure)}\n\n"
    ).encode()
    server.script(Reply.sse(body, piece=11))
    chunks: list[str] = []
    (error,) = run_calls(
        "dashscope", server.base_url, [{**CALL, "stream": True, "on_chunk": chunks.append}]
    )
    assert isinstance(error, ServerError)
    assert (error.status, error.code, error.request_id, error.retryable) == (
        500,
        "InternalError.Algo",
        "r9",
        True,
    )
    assert chunks == ["He"]


@pytest.mark.parametrize("api", ["compatible", "dashscope"])
def test_dropped_connection_mid_stream_is_retryable(server: ScriptedServer, api: Api) -> None:
    reply = stream_reply(api)
    assert reply.chunks is not None
    reply.drop_after = len(reply.chunks) // 2
    server.script(reply)
    chunks: list[str] = []
    (error,) = run_calls(
        api, server.base_url, [{**CALL, "stream": True, "on_chunk": chunks.append}]
    )
    assert isinstance(error, APIConnectionError), error
    assert error.retryable and not error.stops_batch
    assert chunks  # some text had arrived before the cut


def test_stream_closed_cleanly_before_its_end_is_retryable(server: ScriptedServer) -> None:
    whole = stream_reply("compatible")
    assert whole.chunks is not None
    server.script(Reply(headers=whole.headers, chunks=whole.chunks[:5]))  # ends the body early
    (error,) = run_calls("compatible", server.base_url, [{**CALL, "stream": True}])
    assert isinstance(error, APIConnectionError)
    assert error.code == "stream_incomplete"


def test_read_timeout_on_a_plain_call(server: ScriptedServer) -> None:
    timeouts = Timeouts(connect=2.0, read=0.3, stream_idle=5.0)
    server.script(Reply(delay_before=1.5, body=b"{}"))
    started = time.monotonic()
    (error,) = run_calls("compatible", server.base_url, [CALL], timeouts)
    assert isinstance(error, APITimeoutError) and error.retryable
    assert error.code == "read_timeout"
    assert time.monotonic() - started < 1.4


def test_stream_timeout_is_idle_time_not_total_time(server: ScriptedServer) -> None:
    timeouts = Timeouts(connect=2.0, read=5.0, stream_idle=0.4)
    chunks = stream_reply("compatible").chunks
    assert chunks is not None
    body = b"".join(chunks)
    # ~13 chunks 0.1 s apart: the whole stream outlasts the idle timeout, no gap does.
    flowing = Reply.sse(body, piece=200, delay_between=0.1)
    stalled = Reply.sse(body, piece=200, delay_between=1.2)
    assert flowing.chunks is not None and len(flowing.chunks) * 0.1 > 0.8
    server.script(flowing, stalled)
    started = time.monotonic()
    ok, error = run_calls("compatible", server.base_url, [{**CALL, "stream": True}] * 2, timeouts)
    assert isinstance(ok, OCRResult), ok
    assert isinstance(error, APITimeoutError)
    assert error.code == "stream_idle_timeout"
    assert time.monotonic() - started < 3.5


def test_connection_refused_is_retryable() -> None:
    with socket.socket() as sock:  # a port that was free a moment ago, nobody listening
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    (error,) = run_calls("compatible", f"http://127.0.0.1:{port}", [CALL])
    assert isinstance(error, APIConnectionError) and error.retryable


def test_recorded_stream_request_is_complete_json(server: ScriptedServer) -> None:
    server.script(stream_reply("compatible"))
    run_calls("compatible", server.base_url, [{**CALL, "stream": True}])
    body = json.loads(server.requests[0].body)
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
