"""Response builders of both APIs, against the seed's sample shapes."""

from __future__ import annotations

import json
from typing import Any

import pytest

from qocr.emulator import errors
from qocr.emulator import shapes_compatible as compat
from qocr.emulator import shapes_native as native
from qocr.emulator.answers import Answer
from qocr.emulator.completion import Completion, Usage, build_completion, finish
from qocr.emulator.textunits import count_tokens

TEXT = '```json\n{\n    "invoice_code": "142011726001"\n}\n```'


def _completion(text: str = TEXT, *, ocr_result: dict[str, Any] | None = None) -> Completion:
    return Completion(
        request_id="8f8c0f6e-6805-4056-bb65-d26d66080a41",
        completion_id="chatcmpl-ba21fa91-dcd6-4dad-90cc-6d49c3c39094",
        created=1763283287,
        model="qwen-vl-ocr-latest",
        text=text,
        finish_reason="stop",
        usage=Usage(image_tokens=1001, text_tokens=184, output_tokens=count_tokens(text)),
        ocr_result=ocr_result,
    )


def _sse_payloads(events: list[bytes]) -> list[str]:
    payloads = []
    for event in events:
        text = event.decode()
        assert text.startswith("data: ") and text.endswith("\n\n")
        payloads.append(text[len("data: ") : -2])
    return payloads


def test_compatible_completion_has_the_seed_fields() -> None:
    body = compat.completion_body(_completion())
    assert list(body) == [
        "id",
        "choices",
        "created",
        "model",
        "object",
        "service_tier",
        "system_fingerprint",
        "usage",
    ]
    assert body["object"] == "chat.completion"
    assert body["id"].startswith("chatcmpl-")
    choice = body["choices"][0]
    assert choice["finish_reason"] == "stop" and choice["index"] == 0 and choice["logprobs"] is None
    assert choice["message"] == {
        "content": TEXT,
        "refusal": None,
        "role": "assistant",
        "annotations": None,
        "audio": None,
        "function_call": None,
        "tool_calls": None,
    }
    usage = body["usage"]
    assert usage["prompt_tokens"] == 1185
    assert usage["total_tokens"] == 1185 + usage["completion_tokens"]
    assert usage["prompt_tokens_details"] == {
        "audio_tokens": None,
        "cached_tokens": None,
        "image_tokens": 1001,
        "text_tokens": 184,
    }
    assert usage["completion_tokens_details"]["text_tokens"] == usage["completion_tokens"]


@pytest.mark.parametrize("include_usage", [True, False])
def test_compatible_stream_events(include_usage: bool) -> None:
    completion = _completion()
    events = compat.stream_events(completion, chunk_tokens_n=2, include_usage=include_usage)
    payloads = _sse_payloads(events)
    assert payloads[-1] == "[DONE]"
    chunks = [json.loads(p) for p in payloads[:-1]]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert len({c["id"] for c in chunks}) == 1 and len({c["created"] for c in chunks}) == 1
    first = chunks[0]["choices"][0]
    assert first["delta"]["role"] == "assistant" and first["delta"]["content"] == ""
    content_chunks = chunks[:-1] if include_usage else chunks
    reasons = [c["choices"][0]["finish_reason"] for c in content_chunks]
    assert reasons[:-1] == [None] * (len(reasons) - 1) and reasons[-1] == "stop"
    assert content_chunks[-1]["choices"][0]["delta"]["content"] == ""
    text = "".join(c["choices"][0]["delta"]["content"] for c in content_chunks)
    assert text == TEXT
    assert all(c["usage"] is None for c in content_chunks)
    if include_usage:
        assert chunks[-1]["choices"] == []
        assert chunks[-1]["usage"]["completion_tokens"] == count_tokens(TEXT)


def test_compatible_error_body() -> None:
    body = compat.error_body(errors.request_rate_exceeded(), "rid")
    assert body == {
        "error": {
            "message": "Requests rate limit exceeded, please try again later.",
            "type": "limit_requests",
            "param": None,
            "code": "limit_requests",
        },
        "request_id": "rid",
    }


def test_native_response_body_matches_the_seed_kie_sample() -> None:
    kv = {"invoice_code": "142011726001"}
    body = native.response_body(_completion(ocr_result={"kv_result": kv}))
    assert set(body) == {"output", "usage", "request_id"}
    choice = body["output"]["choices"][0]
    assert choice["finish_reason"] == "stop"
    assert choice["message"]["role"] == "assistant"
    assert choice["message"]["content"] == [{"ocr_result": {"kv_result": kv}, "text": TEXT}]
    usage = body["usage"]
    assert usage["input_tokens"] == 1185 and usage["image_tokens"] == 1001
    assert usage["input_tokens_details"] == {"image_tokens": 1001, "text_tokens": 184}
    assert usage["output_tokens_details"] == {"text_tokens": usage["output_tokens"]}
    assert usage["total_tokens"] == usage["input_tokens"] + usage["output_tokens"]


def _parse_native_event(event: bytes) -> tuple[list[str], dict[str, Any]]:
    text = event.decode()
    assert text.endswith("\n\n")
    lines = text[:-2].split("\n")
    assert lines[-1].startswith("data:") and not lines[-1].startswith("data: ")
    return lines[:-1], json.loads(lines[-1][len("data:") :])


@pytest.mark.parametrize("incremental", [True, False])
def test_native_stream_events(incremental: bool) -> None:
    completion = _completion(ocr_result={"kv_result": {"invoice_code": "142011726001"}})
    events = native.stream_events(completion, chunk_tokens_n=3, incremental=incremental)
    assert len(events) > 2
    texts = []
    for index, event in enumerate(events, start=1):
        header, body = _parse_native_event(event)
        assert header == [f"id:{index}", "event:result", ":HTTP_STATUS/200"]
        choice = body["output"]["choices"][0]
        last = index == len(events)
        assert choice["finish_reason"] == ("stop" if last else "null")
        content = choice["message"]["content"][0]
        assert ("ocr_result" in content) == last
        texts.append(content["text"])
        assert body["usage"]["output_tokens"] == count_tokens(
            "".join(texts) if incremental else texts[-1]
        )
        assert body["request_id"] == completion.request_id
    if incremental:
        assert "".join(texts) == TEXT
    else:
        assert texts[-1] == TEXT
        assert all(TEXT.startswith(t) for t in texts)


def test_native_stream_of_an_empty_answer_is_one_final_event() -> None:
    events = native.stream_events(_completion(""), chunk_tokens_n=3, incremental=True)
    assert len(events) == 1
    _, body = _parse_native_event(events[0])
    assert body["output"]["choices"][0]["finish_reason"] == "stop"


def test_native_error_body_and_event() -> None:
    error = errors.token_rate_exceeded()
    assert native.error_body(error, "rid") == {
        "request_id": "rid",
        "code": "Throttling.AllocationQuota",
        "message": "Allocated quota exceeded, please increase your quota limit.",
    }
    header, body = _parse_native_event(native.error_event(1, error, "rid"))
    assert header == ["id:1", "event:error", ":HTTP_STATUS/429"]
    assert body["code"] == "Throttling.AllocationQuota"


@pytest.mark.parametrize(
    ("text", "max_tokens", "stops", "expected_text", "reason", "keeps_result"),
    [
        ("alpha beta gamma", 100, (), "alpha beta gamma", "stop", True),
        ("alpha beta gamma", 3, (), "alpha beta", "length", False),  # alph|a| beta
        ("alpha beta gamma", 100, (" gamma",), "alpha beta", "stop", True),
        ("alpha beta gamma", 2, ("gamma",), "alpha", "length", False),
    ],
)
def test_finish_applies_stop_then_max_tokens(
    text: str,
    max_tokens: int,
    stops: tuple[str, ...],
    expected_text: str,
    reason: str,
    keeps_result: bool,
) -> None:
    result: dict[str, object] = {"words_info": []}
    sent, finish_reason, ocr_result = finish(
        Answer(text, result), max_tokens=max_tokens, stops=stops
    )
    assert (sent, finish_reason) == (expected_text, reason)
    assert (ocr_result is result) == keeps_result


def test_build_completion_counts_usage() -> None:
    completion = build_completion(
        Answer("Total 99.50"),
        request_id="r",
        completion_id="chatcmpl-r",
        created=1,
        model="qwen-vl-ocr",
        image_tokens=332,
        prompt="Read it.",
        max_tokens=4,
        stops=(),
    )
    assert completion.text == "Total 99."  # Tota|l| 99|.
    assert completion.finish_reason == "length"
    assert completion.usage == Usage(image_tokens=332, text_tokens=3, output_tokens=4)
    assert completion.usage.total_tokens == 339


def test_native_bodies_carry_the_seeds_null_text_finish_reason_and_zero_characters() -> None:
    # Issue 16.8: raw HTTP users see these fields as the reference shows them.
    completion = _completion()
    body = native.response_body(completion)
    assert list(body["output"]) == ["text", "finish_reason", "choices"]
    assert body["output"]["text"] is None and body["output"]["finish_reason"] is None
    assert list(body["usage"])[:4] == [
        "input_tokens",
        "output_tokens",
        "characters",
        "image_tokens",
    ]
    assert body["usage"]["characters"] == 0
    assert "logprobs" not in body["output"]["choices"][0]
    for event in native.stream_events(completion, chunk_tokens_n=3, incremental=True):
        _, streamed = _parse_native_event(event)
        assert streamed["output"]["text"] is None and streamed["output"]["finish_reason"] is None
        assert streamed["usage"]["characters"] == 0


def _with_logprobs(top_logprobs: int) -> Completion:
    return build_completion(
        Answer(TEXT),
        request_id="r",
        completion_id="chatcmpl-r",
        created=1,
        model="qwen-vl-ocr-latest",
        image_tokens=10,
        prompt="Read it.",
        max_tokens=100,
        stops=(),
        logprobs=True,
        top_logprobs=top_logprobs,
    )


@pytest.mark.parametrize("top_logprobs", [0, 1, 5])
def test_logprobs_cover_every_output_token_in_both_shapes(top_logprobs: int) -> None:
    # Issue 16.5: logprobs were never returned.
    completion = _with_logprobs(top_logprobs)
    content = completion.logprobs
    assert content is not None and "".join(entry["token"] for entry in content) == TEXT
    for entry in content:
        assert bytes(entry["bytes"]).decode("utf-8") == entry["token"]
        assert -0.25 <= entry["logprob"] <= 0
        assert len(entry["top_logprobs"]) == top_logprobs
        if top_logprobs:
            assert entry["top_logprobs"][0]["token"] == entry["token"]
            logprobs = [alt["logprob"] for alt in entry["top_logprobs"]]
            assert logprobs == sorted(logprobs, reverse=True)
    assert compat.completion_body(completion)["choices"][0]["logprobs"] == {"content": content}
    assert native.response_body(completion)["output"]["choices"][0]["logprobs"] == {
        "content": content
    }
    streamed_compat = [
        json.loads(payload)
        for payload in _sse_payloads(
            compat.stream_events(completion, chunk_tokens_n=3, include_usage=True)
        )
        if payload != "[DONE]"
    ]
    assert [
        entry
        for chunk in streamed_compat
        for choice in chunk["choices"]
        if choice["logprobs"]
        for entry in choice["logprobs"]["content"]
    ] == content
    streamed_native = [
        _parse_native_event(event)[1]["output"]["choices"][0]["logprobs"]["content"]
        for event in native.stream_events(completion, chunk_tokens_n=3, incremental=True)
    ]
    assert [entry for chunk in streamed_native for entry in chunk] == content
