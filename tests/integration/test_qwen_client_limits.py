"""A hostile provider over a real socket: answers that trickle, never come, or are too big.

Each call must end within its deadline plus a small margin, with a retryable timeout; an
answer over the size cap must fail clearly instead of being kept; over-long provider
strings must come back cut (issue 13, point 2).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import pytest

from qocr.qwen import APITimeoutError, QwenOCRClient, ServerError, Timeouts
from qocr.qwen.catalog import Api
from qocr.qwen.errors import ResponseTooLargeError
from tests.support.qwen_replies import API_KEY, plain_reply, stream_reply
from tests.support.qwen_scripted_server import Reply, ScriptedServer

CALL: dict[str, Any] = {"image": "https://example.com/scan.png", "model": "qwen-vl-ocr-latest"}
DEADLINE_SECONDS = 1.0
MARGIN_SECONDS = 0.5
# Phase timeouts far above the deadline: only the deadline may end these calls.
SLOW_TIMEOUTS = Timeouts(connect=5.0, read=30.0, stream_idle=30.0, write=5.0, pool=5.0)


@pytest.fixture
def server() -> Iterator[ScriptedServer]:
    with ScriptedServer() as scripted:
        yield scripted


def client(server: ScriptedServer, api: Api = "compatible", **kwargs: Any) -> QwenOCRClient:
    return QwenOCRClient(
        API_KEY,
        api=api,
        base_url=server.base_url,
        timeout=SLOW_TIMEOUTS,
        deadline_seconds=DEADLINE_SECONDS,
        **kwargs,
    )


def timed_failure(
    server: ScriptedServer, api: Api = "compatible", **call: Any
) -> tuple[Exception, float]:
    started = time.monotonic()
    with client(server, api=api) as qwen:
        try:
            qwen.recognize(**{**CALL, **call})
        except Exception as exc:  # the test asserts on the error's type
            return exc, time.monotonic() - started
    pytest.fail("the call should have failed")


def assert_cut_at_the_deadline(error: Exception, elapsed: float) -> None:
    assert isinstance(error, APITimeoutError), repr(error)
    assert error.code == "deadline_exceeded" and error.retryable
    assert DEADLINE_SECONDS - 0.05 <= elapsed < DEADLINE_SECONDS + MARGIN_SECONDS


def test_a_200_body_trickling_one_byte_at_a_time_is_cut_at_the_deadline(
    server: ScriptedServer,
) -> None:
    body = plain_reply("compatible").body
    server.script(
        Reply(
            headers={"Content-Type": "application/json"},
            chunks=[body[i : i + 1] for i in range(len(body))],
            delay_between=0.2,
        )
    )
    assert_cut_at_the_deadline(*timed_failure(server))


@pytest.mark.parametrize("api", ["compatible", "dashscope"])
def test_a_stream_of_keep_alive_comments_is_cut_at_the_deadline(
    server: ScriptedServer, api: Api
) -> None:
    chunks = stream_reply(api).chunks
    assert chunks is not None
    first_event = b"".join(chunks).split(b"\n\n")[0] + b"\n\n"
    keep_alive = [b": keep-alive\n\n"] * 200
    server.script(
        Reply(
            headers={"Content-Type": "text/event-stream"},
            chunks=[first_event, *keep_alive],
            delay_between=0.2,
        )
    )
    assert_cut_at_the_deadline(*timed_failure(server, api=api, stream=True))


def test_a_read_blocked_past_the_deadline_is_cut_by_the_watchdog(server: ScriptedServer) -> None:
    # One byte every 0.9 s: no read times out (each is clamped to the 1 s left when the call
    # started), yet the read begun at 0.9 s lasts until 1.8 s. Only cutting the blocked read
    # ends the call on time.
    body = plain_reply("compatible").body
    server.script(
        Reply(
            headers={"Content-Type": "application/json"},
            chunks=[body[i : i + 1] for i in range(len(body))],
            delay_between=0.9,
        )
    )
    assert_cut_at_the_deadline(*timed_failure(server))


def test_a_server_that_never_answers_is_cut_at_the_deadline(server: ScriptedServer) -> None:
    server.script(Reply(delay_before=20.0, body=b"{}"))
    assert_cut_at_the_deadline(*timed_failure(server))


def test_a_call_that_finishes_in_time_is_untouched_and_the_pool_reused(
    server: ScriptedServer,
) -> None:
    server.script(plain_reply("compatible"), stream_reply("compatible"), plain_reply("compatible"))
    with client(server) as qwen:
        first = qwen.recognize(**CALL)
        streamed = qwen.recognize(**CALL, stream=True)
        time.sleep(DEADLINE_SECONDS + 0.2)  # the first calls' alarms are long past due
        last = qwen.recognize(**CALL)
    assert first.text == streamed.text == last.text
    # A keep-alive connection whose alarm was cancelled is reused, not cut.
    ports = {request.client_port for request in server.requests}
    assert len(ports) == 1


@pytest.mark.parametrize("stream", [False, True])
def test_an_answer_over_the_size_cap_fails_without_being_kept(
    server: ScriptedServer, stream: bool
) -> None:
    reply = stream_reply("compatible") if stream else plain_reply("compatible")
    size = len(reply.body) if reply.chunks is None else sum(len(c) for c in reply.chunks)
    if reply.chunks is None:
        # No Content-Length: the cap is found while reading.
        reply = Reply(headers=reply.headers, chunks=[reply.body[:200], reply.body[200:]])
    server.script(reply)
    qwen = client(server, max_response_bytes=size - 1)
    with qwen, pytest.raises(ResponseTooLargeError) as caught:
        qwen.recognize(**CALL, stream=stream)
    assert caught.value.code == "response_too_large" and not caught.value.retryable
    assert str(size - 1) in caught.value.message


def test_a_declared_content_length_over_the_cap_is_refused_before_reading(
    server: ScriptedServer,
) -> None:
    server.script(Reply(headers={"Content-Type": "application/json"}, body=b"{" + b" " * 5000))
    qwen = client(server, max_response_bytes=1000)
    with qwen, pytest.raises(ResponseTooLargeError, match="5001 bytes"):
        qwen.recognize(**CALL)


@pytest.mark.parametrize("api", ["compatible", "dashscope"])
def test_over_long_provider_fields_come_back_cut(server: ScriptedServer, api: Api) -> None:
    code, request_id, message = "C" * 300, "R" * 300, "M" * (5 * 1024 * 1024)
    if api == "compatible":
        body = {"error": {"message": message, "type": "x", "code": code}, "request_id": request_id}
    else:
        body = {"request_id": request_id, "code": code, "message": message}
    server.script(Reply.json(body, status=500))
    error, _ = timed_failure(server, api=api)
    assert isinstance(error, ServerError) and error.retryable
    assert len(error.code) == len(error.request_id or "") == 200
    assert error.code.startswith("CCC") and error.code.endswith("…[cut from 300 chars]")
    assert len(error.message) == 2048 and "cut from 5242880 chars" in error.message
    assert len(str(error)) < 2600 and len(repr(error)) < 2600
    json.dumps(error.message)  # still one clean string
