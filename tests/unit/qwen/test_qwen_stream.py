"""SSE parsing and stream decoding for both APIs, fed whole and split at every byte."""

from __future__ import annotations

import json
from typing import Any

import pytest

from qocr.qwen import (
    APIConnectionError,
    AuthenticationError,
    OCRResult,
    ProtocolError,
    RateLimitError,
    ServerError,
    Usage,
)
from qocr.qwen.catalog import Api
from qocr.qwen.parse import parse_body
from qocr.qwen.sse import SSEEvent, SSEParser
from qocr.qwen.stream import StreamDecoder
from tests.support.qwen_samples import API_KEY, FIXTURES, load_fixture


def feed_all(parser: SSEParser, data: bytes, step: int | None) -> list[SSEEvent]:
    events: list[SSEEvent] = []
    pieces = [data] if step is None else [data[i : i + step] for i in range(0, len(data), step)]
    for piece in pieces:
        events.extend(parser.feed(piece))
    return events + parser.close()


@pytest.mark.parametrize("step", [None, 1, 2, 7])
@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_sse_parser_is_independent_of_chunking_and_line_endings(
    step: int | None, newline: str
) -> None:
    text = (
        ": keep-alive\n"
        'id:1\nevent:result\n:HTTP_STATUS/200\ndata:{"t": "读者对象"}\n\n'
        "data: first line\ndata: second line\n\n"
        "event: ping\n\n"
        "data:last\n\n"
    ).replace("\n", newline)
    events = feed_all(SSEParser(), text.encode("utf-8"), step)
    assert events == [
        SSEEvent(
            data='{"t": "读者对象"}',
            event="result",
            id="1",
            comments=("keep-alive", "HTTP_STATUS/200"),
        ),
        SSEEvent(data="first line\nsecond line"),
        SSEEvent(data="", event="ping"),
        SSEEvent(data="last"),
    ]


def test_sse_close_flushes_a_complete_last_event_but_drops_a_cut_line() -> None:
    parser = SSEParser()
    assert parser.feed(b"data: whole\n") == []
    assert parser.close() == [SSEEvent(data="whole")]
    parser = SSEParser()
    assert parser.feed(b'data: {"cut mid-li') == []
    assert parser.close() == []


def test_sse_rejects_invalid_utf8() -> None:
    with pytest.raises(UnicodeDecodeError):
        SSEParser().feed(b"data: \xff\xfe\n\n")


def seed_compatible_stream() -> bytes:
    """The seed's chunks as they travel: one ``data:`` event each, then ``[DONE]``."""
    lines = (
        (FIXTURES / "seed_compatible_stream_chunks.txt").read_text(encoding="utf-8").splitlines()
    )
    chunks = [line for line in lines if line.startswith("{")]  # the seed elides with "......"
    return "".join(f"data: {chunk}\n\n" for chunk in [*chunks, "[DONE]"]).encode()


def decode(
    api: Api, body: bytes, step: int | None = None, **kwargs: Any
) -> tuple[OCRResult, list[str]]:
    decoder = StreamDecoder(api, secret=API_KEY, **kwargs)
    deltas: list[str] = []
    pieces = [body] if step is None else [body[i : i + step] for i in range(0, len(body), step)]
    for piece in pieces:
        deltas.extend(decoder.feed(piece))
    return decoder.close(), deltas


@pytest.mark.parametrize("step", [None, 1, 13])
def test_seed_compatible_stream(step: int | None) -> None:
    result, deltas = decode("compatible", seed_compatible_stream(), step)
    assert deltas == ["```", "json", "\n", "{\n", "   ", "```"]
    assert result.text == "```json\n{\n   ```"
    assert result.finish_reason == "stop"
    assert result.model == "qwen-vl-ocr-latest"
    assert result.request_id == "chatcmpl-f6fbdc0d-78d6-418f-856f-f099c2e4859b"
    assert result.usage == Usage(513, 141, 332, 181, 654)


def compatible_stream(text_parts: list[str], finish: str = "stop", usage: bool = True) -> bytes:
    events: list[dict[str, object]] = [
        {
            "id": "c1",
            "model": "qwen-vl-ocr-latest",
            "choices": [{"index": 0, "delta": {"content": p}, "finish_reason": None}],
        }
        for p in text_parts
    ]
    events.append(
        {"id": "c1", "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": finish}]}
    )
    if usage:
        events.append(
            {
                "id": "c1",
                "choices": [],
                "usage": {
                    "prompt_tokens": 900,
                    "completion_tokens": 72,
                    "total_tokens": 972,
                    "prompt_tokens_details": {"image_tokens": 754, "text_tokens": 146},
                },
            }
        )
    return (
        "".join(f"data: {json.dumps(e, ensure_ascii=False)}\n\n" for e in events).encode()
        + b"data: [DONE]\n\n"
    )


def native_stream(texts: list[str], finish: str = "stop", ocr_result: Any = None) -> bytes:
    blocks = []
    for i, text in enumerate(texts, 1):
        last = i == len(texts)
        content: dict[str, Any] = {"text": text}
        if last and ocr_result is not None:
            content["ocr_result"] = ocr_result
        data = {
            "output": {
                "choices": [
                    {
                        "message": {"content": [content], "role": "assistant"},
                        "finish_reason": finish if last else "null",
                    }
                ]
            },
            "usage": {
                "input_tokens": 900,
                "output_tokens": i,
                "image_tokens": 754,
                "input_tokens_details": {"image_tokens": 754, "text_tokens": 146},
            },
            "request_id": "req-1",
        }
        payload = json.dumps(data, ensure_ascii=False)
        blocks.append(f"id:{i}\nevent:result\n:HTTP_STATUS/200\ndata:{payload}\n\n")
    return "".join(blocks).encode()


KIE_TEXT = '```json\n{\n    "invoice_code": "142011726001",\n    "buyer_name": "蔡英石"\n}\n```'
KIE_PARTS = [KIE_TEXT[:5], KIE_TEXT[5:20], KIE_TEXT[20:41], KIE_TEXT[41:]]


@pytest.mark.parametrize("step", [None, 1, 5])
def test_native_incremental_and_cumulative_streams_give_the_same_result(step: int | None) -> None:
    cumulative = ["".join(KIE_PARTS[: i + 1]) for i in range(len(KIE_PARTS))]
    inc, inc_deltas = decode(
        "dashscope", native_stream(KIE_PARTS), step, task="key_information_extraction"
    )
    cum, cum_deltas = decode(
        "dashscope",
        native_stream(cumulative),
        step,
        task="key_information_extraction",
        incremental=False,
    )
    assert inc == cum
    assert inc_deltas == cum_deltas == KIE_PARTS
    assert inc.text == KIE_TEXT
    assert inc.kv_result == {"invoice_code": "142011726001", "buyer_name": "蔡英石"}
    assert inc.request_id == "req-1"
    assert inc.usage == Usage(900, 4, 754, 146, 904)


def test_native_incremental_stream_with_an_empty_final_event() -> None:
    result, deltas = decode("dashscope", native_stream(["ab", "cd", ""]))
    assert (result.text, deltas, result.finish_reason) == ("abcd", ["ab", "cd"], "stop")


def test_cumulative_stream_that_rewrites_sent_text_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        decode("dashscope", native_stream(["ab", "abc", "xbcd"]), incremental=False)


@pytest.mark.parametrize("step", [None, 1])
def test_incremental_deltas_that_repeat_the_text_so_far_are_all_kept(step: int | None) -> None:
    # Issue 16.2: "No. 12" begins with "No" but is a delta; guessing "cumulative" from the
    # text dropped "No" and then failed the stream with a (billed) retryable error.
    result, deltas = decode("dashscope", native_stream(["No", "No. 12", " total", ""]), step)
    assert deltas == ["No", "No. 12", " total"]
    assert result.text == "NoNo. 12 total"


def test_streamed_and_plain_answers_are_equal_on_both_apis() -> None:
    plain_compat = parse_body(
        "compatible",
        {
            "id": "c1",
            "model": "qwen-vl-ocr-latest",
            "choices": [{"finish_reason": "stop", "message": {"content": KIE_TEXT}}],
            "usage": {
                "prompt_tokens": 900,
                "completion_tokens": 72,
                "total_tokens": 972,
                "prompt_tokens_details": {"image_tokens": 754, "text_tokens": 146},
            },
        },
        task="key_information_extraction",
    )
    streamed_compat, _ = decode(
        "compatible", compatible_stream(KIE_PARTS), 3, task="key_information_extraction"
    )
    assert streamed_compat == plain_compat
    kv = {"invoice_code": "142011726001", "buyer_name": "蔡英石"}
    plain_native = parse_body(
        "dashscope",
        {
            "request_id": "req-1",
            "output": {
                "choices": [
                    {
                        "finish_reason": "stop",
                        "message": {
                            "content": [{"text": KIE_TEXT, "ocr_result": {"kv_result": kv}}]
                        },
                    }
                ]
            },
            "usage": {
                "input_tokens": 900,
                "output_tokens": 4,
                "image_tokens": 754,
                "input_tokens_details": {"image_tokens": 754, "text_tokens": 146},
            },
        },
        task="key_information_extraction",
        model="qwen-vl-ocr-latest",
    )
    streamed_native, _ = decode(
        "dashscope",
        native_stream(KIE_PARTS, ocr_result={"kv_result": kv}),
        3,
        task="key_information_extraction",
        model="qwen-vl-ocr-latest",
    )
    assert streamed_native == plain_native
    assert plain_native.kv_result == plain_compat.kv_result == kv


def test_length_finish_is_surfaced_in_streams() -> None:
    result, _ = decode("compatible", compatible_stream(["abc"], finish="length"))
    assert result.truncated
    result, _ = decode("dashscope", native_stream(["abc"], finish="length"))
    assert result.truncated


@pytest.mark.parametrize(
    "body",
    [
        compatible_stream(["abc"], usage=False).replace(b"data: [DONE]\n\n", b""),
        compatible_stream(["abc"])[:60],
        b"",
    ],
)
def test_compatible_stream_cut_short_is_a_retryable_connection_error(body: bytes) -> None:
    with pytest.raises(APIConnectionError) as caught:
        decode("compatible", body)
    assert caught.value.retryable
    assert caught.value.code == "stream_incomplete"


def test_native_stream_without_its_final_event_is_a_connection_error() -> None:
    body = native_stream(["ab", "cd"])
    cut = body[: body.rindex(b"id:2")]
    with pytest.raises(APIConnectionError):
        decode("dashscope", cut)


def test_native_error_event_uses_the_status_comment() -> None:
    body = native_stream(["ab"]).replace(b'finish_reason": "stop', b'finish_reason": "null') + (
        b"id:2\nevent:error\n:HTTP_STATUS/429\ndata:"
        b'{"code":"Throttling.RateQuota","message":"Requests rate limit exceeded.",'
        b'"request_id":"req-1"}\n\n'
    )
    with pytest.raises(RateLimitError) as caught:
        decode("dashscope", body)
    assert (caught.value.status, caught.value.code, caught.value.request_id) == (
        429,
        "Throttling.RateQuota",
        "req-1",
    )


def test_compatible_error_chunk_is_classified_by_its_code() -> None:
    error = {
        "message": "Incorrect API key provided.",
        "type": "invalid_request_error",
        "param": None,
        "code": "invalid_api_key",
    }
    body = f"data: {json.dumps({'error': error, 'request_id': 'req-2'})}\n\n".encode()
    with pytest.raises(AuthenticationError) as caught:
        decode("compatible", body)
    assert caught.value.status == 401  # inferred from the code
    assert caught.value.stops_batch


def test_unknown_error_in_a_stream_is_a_server_error() -> None:
    with pytest.raises(ServerError):
        decode("dashscope", b'event:error\ndata:{"code":"Mystery","message":"?"}\n\n')


def test_garbage_event_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError):
        decode("compatible", b"data: {not json\n\n")


def test_logprobs_are_collected_across_chunks() -> None:
    events = [
        {
            "id": "c",
            "choices": [
                {
                    "delta": {"content": "a"},
                    "finish_reason": None,
                    "logprobs": {"content": [{"token": "a", "logprob": -0.1}]},
                }
            ],
        },
        {
            "id": "c",
            "choices": [
                {
                    "delta": {"content": "b"},
                    "finish_reason": "stop",
                    "logprobs": {"content": [{"token": "b", "logprob": -0.2}]},
                }
            ],
        },
        {"id": "c", "choices": [], "usage": {"prompt_tokens": 1, "completion_tokens": 2}},
    ]
    body = "".join(f"data: {json.dumps(e)}\n\n" for e in events).encode() + b"data: [DONE]\n\n"
    result, _ = decode("compatible", body)
    assert result.logprobs == {
        "content": [{"token": "a", "logprob": -0.1}, {"token": "b", "logprob": -0.2}]
    }


def test_seed_native_response_fixture_is_also_a_valid_single_event_stream() -> None:
    # The seed says the native object has the same format streamed and not streamed.
    data = load_fixture("seed_native_kie_response.json")
    body = f"id:1\nevent:result\n:HTTP_STATUS/200\ndata:{json.dumps(data)}\n\n".encode()
    streamed, _ = decode("dashscope", body, 4, task="key_information_extraction")
    plain = parse_body("dashscope", data, task="key_information_extraction")
    assert streamed == plain
