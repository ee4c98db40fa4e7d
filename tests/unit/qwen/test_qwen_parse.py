"""Parsing the seed's sample responses, usage normalization, fenced blocks, finish reasons."""

from __future__ import annotations

from typing import Any

import pytest

from qocr.qwen import ProtocolError, Usage, WordInfo
from qocr.qwen.catalog import Api
from qocr.qwen.parse import (
    finish_reason,
    load_json,
    normalize_usage,
    parse_body,
    parse_structured,
    split_fenced,
)
from tests.support.qwen_samples import load_fixture

SEED_KV = {
    "seller_name": "null",
    "buyer_name": "Cai Yingshi",
    "price_excluding_tax": "230769.23",
    "organization_code": "null",
    "invoice_code": "142011726001",
}


def test_seed_compatible_response() -> None:
    data = load_fixture("seed_compatible_response.json")
    result = parse_body("compatible", data, task="key_information_extraction")
    assert result.text.startswith("```json\n{\n")
    assert result.finish_reason == "stop"
    assert result.model == "qwen-vl-ocr-latest"
    assert result.request_id == "chatcmpl-ba21fa91-dcd6-4dad-90cc-6d49c3c39094"
    assert result.usage == Usage(
        input_tokens=1185, output_tokens=72, image_tokens=1001, text_tokens=184, total_tokens=1257
    )
    assert result.parsed == SEED_KV
    assert result.kv_result == SEED_KV  # KIE on the compatible API: from the fenced JSON
    assert result.words_info is None
    assert result.logprobs is None
    assert not result.truncated


def test_seed_compatible_response_without_task_still_parses_the_fenced_json() -> None:
    result = parse_body("compatible", load_fixture("seed_compatible_response.json"), task=None)
    assert result.parsed == SEED_KV
    assert result.kv_result is None  # only the KIE task promises a kv_result


def test_seed_native_kie_response() -> None:
    data = load_fixture("seed_native_kie_response.json")
    result = parse_body(
        "dashscope", data, task="key_information_extraction", model="qwen-vl-ocr-latest"
    )
    assert result.kv_result == SEED_KV  # from ocr_result.kv_result
    assert result.parsed == SEED_KV  # and the same from the text
    assert result.request_id == "8f8c0f6e-6805-4056-bb65-d26d66080a41"
    assert result.model == "qwen-vl-ocr-latest"  # native bodies name no model
    assert result.finish_reason == "stop"
    assert result.usage == Usage(
        input_tokens=926, output_tokens=72, image_tokens=754, text_tokens=172, total_tokens=998
    )


def test_guide_native_advanced_recognition_response() -> None:
    data = load_fixture("guide_native_advanced_response.json")
    result = parse_body("dashscope", data, task="advanced_recognition")
    assert result.words_info == (
        WordInfo(
            text="Audience",
            location=(52, 54, 250, 57, 249, 106, 52, 103),
            rotate_rect=(150, 80, 49, 197, -89),
        ),
        WordInfo(
            text="generating reports.",
            location=(50, 337, 197, 338, 197, 372, 50, 370),
            rotate_rect=(123, 354, 33, 146, -89),
        ),
    )
    assert result.usage == Usage(1410, 38, 1377, 33, 1448)


def test_compatible_advanced_recognition_reads_words_from_the_text() -> None:
    text = (
        '```json\n[{"text": "Hello", "location": [1, 2, 3, 2, 3, 4, 1, 4], '
        '"rotate_rect": [2, 3, 2, 2, 0]}]\n```'
    )
    data = {"choices": [{"finish_reason": "stop", "message": {"content": text}}]}
    result = parse_body("compatible", data, task="advanced_recognition")
    assert result.words_info == (WordInfo("Hello", (1, 2, 3, 2, 3, 4, 1, 4), (2, 3, 2, 2, 0)),)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        # Native, with details and a top-level image_tokens.
        (
            {
                "input_tokens": 926,
                "output_tokens": 72,
                "image_tokens": 754,
                "input_tokens_details": {"image_tokens": 754, "text_tokens": 172},
                "total_tokens": 998,
            },
            Usage(926, 72, 754, 172, 998),
        ),
        # Native, older shape: no details, no total; text = input - image, total computed.
        (
            {"output_tokens": 159, "input_tokens": 606, "image_tokens": 427},
            Usage(606, 159, 427, 179, 765),
        ),
        # Compatible, with details.
        (
            {
                "prompt_tokens": 513,
                "completion_tokens": 141,
                "total_tokens": 654,
                "prompt_tokens_details": {"image_tokens": 332, "text_tokens": 181},
            },
            Usage(513, 141, 332, 181, 654),
        ),
        # Compatible, bare: total computed.
        ({"prompt_tokens": 10, "completion_tokens": 5}, Usage(10, 5, 0, 10, 15)),
        ({}, Usage(0, 0, 0, 0, 0)),
    ],
)
def test_usage_normalization(raw: dict[str, Any], expected: Usage) -> None:
    assert normalize_usage(raw) == expected


def test_usage_absent() -> None:
    assert normalize_usage(None) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [("stop", "stop"), ("length", "length"), ("null", None), (None, None), ("", None)],
)
def test_finish_reason(value: Any, expected: str | None) -> None:
    assert finish_reason(value) == expected


def test_length_is_surfaced_as_truncated() -> None:
    data = {
        "output": {
            "choices": [
                {"finish_reason": "length", "message": {"content": [{"text": '```json\n{"a": '}]}}
            ]
        },
        "usage": {"input_tokens": 5, "output_tokens": 8},
    }
    result = parse_body("dashscope", data, task="key_information_extraction")
    assert result.finish_reason == "length"
    assert result.truncated
    assert result.parsed is None  # the cut JSON does not decode
    assert result.kv_result is None


@pytest.mark.parametrize(
    ("text", "task", "expected"),
    [
        ('```json\n{"a": 1}\n```', None, {"a": 1}),
        ("```json\n[1, 2]\n```", "advanced_recognition", [1, 2]),
        (
            "```html\n<table><tr><td>1</td></tr></table>\n```",
            "table_parsing",
            "<table><tr><td>1</td></tr></table>",
        ),
        ("```latex\n\\section{A}\n```", "document_parsing", "\\section{A}"),
        ("$$x^2$$", "formula_recognition", "$$x^2$$"),
        ('{"a": 1}', "key_information_extraction", {"a": 1}),
        ('```\n{"a": 1}\n```', "key_information_extraction", {"a": 1}),
        ("plain words", "text_recognition", None),
        ("plain words", None, None),
        ("```html\n<table><tr>", "table_parsing", "<table><tr>"),  # cut before the fence closed
    ],
)
def test_parse_structured(text: str, task: Any, expected: Any) -> None:
    assert parse_structured(text, task) == expected


def test_split_fenced_reports_the_language() -> None:
    assert split_fenced("before\n```JSON\n{}\n```\nafter") == ("json", "{}")
    assert split_fenced("no fence here") is None


@pytest.mark.parametrize(
    "data",
    [{"choices": []}, {"output": {}}, {"unexpected": True}, []],
)
@pytest.mark.parametrize("api", ["compatible", "dashscope"])
def test_unexpected_shapes_are_protocol_errors(data: Any, api: Api) -> None:
    with pytest.raises(ProtocolError) as caught:
        parse_body(api, data, task=None)
    assert caught.value.retryable


def test_non_json_body_is_a_protocol_error() -> None:
    with pytest.raises(ProtocolError, match="not JSON"):
        load_json(b"<html>502 Bad Gateway</html>")
