"""The client's bounds, sans I/O: caps on provider strings, the call budget, finite timeouts."""

from __future__ import annotations

import math

import httpx
import pytest

from qocr.qwen import APITimeoutError, OptionsError, QwenOCRClient, ServerError, Timeouts
from qocr.qwen.budget import CallBudget
from qocr.qwen.caps import MAX_FIELD_CHARS, MAX_MESSAGE_CHARS, cap_chars
from qocr.qwen.classify import error_from_response
from qocr.qwen.errors import ResponseTooLargeError
from qocr.qwen.parse import parse_body
from tests.support.qwen_samples import API_KEY


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.mark.parametrize("length", [0, 10, 200, 201, 300, 5_000_000])
def test_cap_chars_cuts_with_a_marker_and_is_idempotent(length: int) -> None:
    value = "x" * length
    capped = cap_chars(value, 200)
    assert len(capped) == min(length, 200)
    assert cap_chars(capped, 200) == capped
    if length > 200:
        assert capped.endswith(f"…[cut from {length} chars]")
    assert cap_chars(None, 200) is None


def test_errors_cap_message_code_and_request_id() -> None:
    error = ServerError("m" * 5_000_000, code="c" * 300, request_id="r" * 300)
    assert len(error.message) == MAX_MESSAGE_CHARS and error.args == (error.message,)
    assert len(error.code) == len(error.request_id or "") == MAX_FIELD_CHARS
    assert error.code.endswith("…[cut from 300 chars]")
    rebuilt = error.__reduce__()
    assert rebuilt[0](*rebuilt[1]).code == error.code  # survives Celery's pickling


def test_the_key_is_redacted_before_a_message_is_cut() -> None:
    # A cut through the key would leave a prefix of it that redaction no longer matches.
    near_a_cut = [*range(480, 505), *range(MAX_MESSAGE_CHARS - 40, MAX_MESSAGE_CHARS + 5)]
    for offset in near_a_cut:
        body = ("x" * offset + API_KEY + "y" * 100).encode()
        error = error_from_response(502, body, secret=API_KEY)
        assert API_KEY[:8] not in error.message, offset
        json_error = error_from_response(
            500, {"code": "E", "message": "x" * offset + API_KEY}, secret=API_KEY
        )
        assert API_KEY[:8] not in json_error.message, offset


def test_budget_raises_past_the_deadline_and_past_the_cap() -> None:
    clock = FakeClock()
    budget = CallBudget(10.0, 100, clock=clock)
    budget.take(60)
    clock.now += 9.9
    budget.take(40)
    with pytest.raises(ResponseTooLargeError, match="101 bytes"):
        budget.take(1)
    budget = CallBudget(10.0, 100, clock=clock)
    clock.now += 10.0
    with pytest.raises(APITimeoutError) as caught:
        budget.take(1)
    assert caught.value.code == "deadline_exceeded" and caught.value.retryable
    with pytest.raises(ResponseTooLargeError):
        CallBudget(10.0, 100, clock=clock).expect({"content-length": "101"})


def test_budget_clamps_every_phase_to_the_time_left() -> None:
    clock = FakeClock()
    budget = CallBudget(5.0, 100, clock=clock)
    clock.now += 3.0
    timeout = budget.timeout(httpx.Timeout(connect=10.0, read=1.0, write=30.0, pool=None))
    assert (timeout.connect, timeout.read, timeout.write, timeout.pool) == (2.0, 1.0, 2.0, 2.0)
    clock.now += 60.0
    assert budget.timeout(httpx.Timeout(30.0)).read == pytest.approx(0.001)


@pytest.mark.parametrize("seconds", [math.inf, math.nan, 0.0, -1.0])
def test_timeouts_and_deadlines_must_be_finite_and_positive(seconds: float) -> None:
    with pytest.raises(OptionsError):
        Timeouts.of(seconds)
    with pytest.raises(OptionsError):
        Timeouts(read=seconds)
    with pytest.raises(OptionsError, match="deadline_seconds"):
        QwenOCRClient(API_KEY, deadline_seconds=seconds)


def test_response_size_cap_must_be_positive() -> None:
    with pytest.raises(OptionsError, match="max_response_bytes"):
        QwenOCRClient(API_KEY, max_response_bytes=0)


def test_over_long_provider_strings_of_a_result_are_capped() -> None:
    body = {
        "request_id": "r" * 300,
        "model": "m" * 300,
        "output": {"choices": [{"finish_reason": "f" * 300, "message": {"content": "ok"}}]},
    }
    result = parse_body("dashscope", body, task=None)
    assert [len(v or "") for v in (result.request_id, result.model, result.finish_reason)] == [
        MAX_FIELD_CHARS
    ] * 3
    assert result.text == "ok"
