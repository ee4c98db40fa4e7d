"""RecognizeOptions: validation table, JSON round trip, stable fingerprints."""

from __future__ import annotations

import hashlib
import json
from typing import Any

import pytest

from qocr.qwen import OptionsError, RecognizeOptions

BASE = {"model": "qwen-vl-ocr-latest"}


@pytest.mark.parametrize(
    ("changes", "code", "words"),
    [
        ({"model": ""}, "invalid_options", "model"),
        ({"task": "translate"}, "task_unknown", "unknown task"),
        (
            {"model": "qwen-vl-ocr-2024-10-28", "task": "text_recognition"},
            "task_unsupported",
            "no built-in tasks",
        ),
        (
            {"model": "qwen-vl-ocr-2025-08-28", "task": "advanced_recognition"},
            "task_unsupported",
            "later than",
        ),
        ({"task": "table_parsing", "prompt": "x"}, "invalid_options", "exclusive"),
        ({"result_schema": {"a": "b"}}, "invalid_options", "key_information_extraction"),
        (
            {"task": "key_information_extraction", "result_schema": {"a": {"b": {"c": {"d": 1}}}}},
            "invalid_options",
            "deeper than 3",
        ),
        ({"task": "key_information_extraction", "result_schema": ["a"]}, "invalid_options", "dict"),
        ({"min_pixels": 0}, "invalid_options", "positive"),
        ({"max_pixels": 30720001}, "invalid_options", "cap"),
        ({"min_pixels": 10_000, "max_pixels": 5_000}, "invalid_options", "larger"),
        ({"max_tokens": 8193}, "invalid_options", "max_tokens"),
        ({"max_tokens": 0}, "invalid_options", "max_tokens"),
        ({"temperature": 2.0}, "invalid_options", "temperature"),
        ({"temperature": 0.1, "top_p": 0.1}, "invalid_options", "not both"),
        ({"top_p": 0.0}, "invalid_options", "top_p"),
        ({"top_k": -1}, "invalid_options", "top_k"),
        ({"presence_penalty": 2.5}, "invalid_options", "presence_penalty"),
        ({"repetition_penalty": 0}, "invalid_options", "repetition_penalty"),
        ({"seed": 2**31}, "invalid_options", "seed"),
        ({"top_logprobs": 6}, "invalid_options", "top_logprobs"),
        (
            {"model": "qwen-vl-ocr-2024-10-28", "logprobs": True},
            "logprobs_unsupported",
            "logprobs",
        ),
        ({"stop": ["a", 1]}, "invalid_options", "mix"),
        ({"stop": []}, "invalid_options", "non-empty"),
        ({"max_tokens": True}, "invalid_options", "wrong type"),
        ({"stream": "yes"}, "invalid_options", "wrong type"),
        ({"enable_rotate": 1}, "invalid_options", "wrong type"),
    ],
)
def test_invalid_options_are_refused(changes: dict[str, Any], code: str, words: str) -> None:
    with pytest.raises(OptionsError) as caught:
        RecognizeOptions(**{**BASE, **changes})
    assert caught.value.code == code
    assert words in caught.value.message
    assert not caught.value.retryable
    assert isinstance(caught.value, ValueError)


def test_round_trip_through_json() -> None:
    options = RecognizeOptions(
        model="qwen-vl-ocr-2025-11-20",
        task="key_information_extraction",
        result_schema={"total": "the total, two decimals", "items": [{"name": ""}]},
        min_pixels=3072,
        max_pixels=8388608,
        enable_rotate=True,
        max_tokens=2048,
        stream=True,
        top_k=1,
        stop=["</s>"],  # type: ignore[arg-type]  # a list, as callers send it: kept as a tuple
        seed=7,
    )
    stored = json.loads(json.dumps(options.to_dict()))
    assert RecognizeOptions.from_dict(stored) == options
    assert stored["stop"] == ["</s>"]
    assert "temperature" not in stored


def test_from_dict_refuses_unknown_keys_and_missing_model() -> None:
    with pytest.raises(OptionsError, match="unknown options: colour"):
        RecognizeOptions.from_dict({"model": "qwen-vl-ocr", "colour": "red"})
    with pytest.raises(OptionsError, match="model"):
        RecognizeOptions.from_dict({})


def test_result_schema_is_copied_not_aliased() -> None:
    schema = {"a": "b"}
    options = RecognizeOptions(
        model="qwen-vl-ocr-latest", task="key_information_extraction", result_schema=schema
    )
    schema["a"] = "changed"
    assert options.result_schema == {"a": "b"}


def test_options_are_frozen_and_hashable() -> None:
    options = RecognizeOptions(model="qwen-vl-ocr-latest")
    with pytest.raises(AttributeError):
        options.model = "other"  # type: ignore[misc]  # the write a frozen dataclass refuses
    assert hash(options) == hash(RecognizeOptions(model="qwen-vl-ocr-latest"))


def test_fingerprint_is_stable_and_ignores_how_the_answer_travels() -> None:
    plain = RecognizeOptions(model="qwen-vl-ocr-latest", max_tokens=100)
    streamed = RecognizeOptions(model="qwen-vl-ocr-latest", max_tokens=100, stream=True)
    assert plain.fingerprint() == streamed.fingerprint()
    # Pinned to the canonical form: a change invalidates every cached result.
    canonical = b'{"max_tokens":100,"model":"qwen-vl-ocr-latest","v":2}'
    assert plain.fingerprint() == hashlib.sha256(canonical).hexdigest()


@pytest.mark.parametrize(
    "changes",
    [
        {"model": "qwen-vl-ocr"},
        {"max_tokens": 101},
        {"prompt": "read it"},
        {"task": "table_parsing"},
        {"max_pixels": 1_000_000},
        {"enable_rotate": True},
        {"seed": 3},
        {"stop": "x"},
    ],
)
def test_fingerprint_changes_with_every_option_that_changes_the_answer(
    changes: dict[str, Any],
) -> None:
    base = RecognizeOptions(model="qwen-vl-ocr-latest", max_tokens=100)
    changed = RecognizeOptions(**{"model": "qwen-vl-ocr-latest", "max_tokens": 100, **changes})
    assert changed.fingerprint() != base.fingerprint()


def test_effective_max_tokens_defaults_to_the_model() -> None:
    assert RecognizeOptions(model="qwen-vl-ocr").effective_max_tokens() == 4096
    assert RecognizeOptions(model="qwen-vl-ocr-latest").effective_max_tokens() == 8192
    assert RecognizeOptions(model="qwen-vl-ocr", max_tokens=5).effective_max_tokens() == 5


@pytest.mark.parametrize(
    "model", ["qwen-vl-ocr", "qwen-vl-ocr-2025-04-13", "qwen-vl-ocr-2025-08-28"]
)
def test_max_tokens_over_the_models_documented_maximum_is_refused(model: str) -> None:
    # Issue 16.1: the service answers 400 above 4096 for these models.
    assert RecognizeOptions(model=model, max_tokens=4096).max_tokens == 4096
    with pytest.raises(OptionsError) as caught:
        RecognizeOptions(model=model, max_tokens=8192)
    assert caught.value.code == "max_tokens_over_limit"
    assert f"over {model}'s maximum of 4096" in caught.value.message
    assert "QOCR_GRANTED_MAX_TOKENS" in caught.value.message


def test_a_granted_ceiling_allows_more_and_is_not_part_of_the_fingerprint() -> None:
    granted = RecognizeOptions(model="qwen-vl-ocr", max_tokens=8192, granted_max_tokens=8192)
    assert RecognizeOptions.from_dict(json.loads(json.dumps(granted.to_dict()))) == granted
    with pytest.raises(OptionsError, match="maximum of 6000"):
        RecognizeOptions(model="qwen-vl-ocr", max_tokens=6001, granted_max_tokens=6000)
    with pytest.raises(OptionsError, match="granted_max_tokens"):
        RecognizeOptions(model="qwen-vl-ocr", granted_max_tokens=9000)
    plain = RecognizeOptions(model="qwen-vl-ocr", max_tokens=100)
    assert RecognizeOptions(**{**plain.to_dict(), "granted_max_tokens": 8192}).fingerprint() == (
        plain.fingerprint()
    )
    # A grant never lowers a documented maximum, and never goes past 8,192.
    assert RecognizeOptions(model="qwen-vl-ocr-latest", max_tokens=8192, granted_max_tokens=10)


@pytest.mark.parametrize(
    ("model", "minimum"),
    [
        ("qwen-vl-ocr-latest", 3072),
        ("qwen-vl-ocr-2025-11-20", 3072),
        ("qwen-vl-ocr", 3136),
        ("qwen-vl-ocr-2025-08-28", 3136),
        ("qwen-vl-ocr-2024-10-28", 3136),
    ],
)
def test_min_pixels_below_the_documented_minimum_is_refused(model: str, minimum: int) -> None:
    # Issue 16.7: refused like max_pixels above the cap.
    assert RecognizeOptions(model=model, min_pixels=minimum).min_pixels == minimum
    with pytest.raises(OptionsError) as caught:
        RecognizeOptions(model=model, min_pixels=minimum - 1)
    assert f"under {model}'s minimum of {minimum}" in caught.value.message
    # Unknown models: the server decides.
    assert RecognizeOptions(model="qwen-vl-ocr-2099-01-01", min_pixels=100).min_pixels == 100
