"""Error classification for every row of the digest's table, both body shapes, no key leaks."""

from __future__ import annotations

import json
import pickle
from typing import Any

import pytest

from qocr.errors import QocrError
from qocr.qwen import (
    AuthenticationError,
    InvalidRequestError,
    ModelNotFoundError,
    PermissionDeniedError,
    QuotaExceededError,
    QwenError,
    RateLimitError,
    ServerError,
)
from qocr.qwen.classify import error_fields, error_from_response
from tests.support.qwen_samples import API_KEY

# status, native code, compatible code, message, class, retryable, stops_batch
TABLE: list[tuple[int, str, str | None, str, type[QwenError], bool, bool]] = [
    (400, "InvalidParameter", "invalid_parameter_error", "bad", InvalidRequestError, False, False),
    (400, "InvalidURL", None, "url unreachable", InvalidRequestError, False, False),
    (
        400,
        "DataInspectionFailed",
        "data_inspection_failed",
        "unsafe",
        InvalidRequestError,
        False,
        False,
    ),
    (400, "BadRequest.TooLarge", None, "too large", InvalidRequestError, False, False),
    (400, "Arrearage", None, "Access denied, account in arrears.", QuotaExceededError, False, True),
    (
        401,
        "InvalidApiKey",
        "invalid_api_key",
        "Invalid API-key provided.",
        AuthenticationError,
        False,
        True,
    ),
    (403, "AccessDenied", None, "denied", PermissionDeniedError, False, True),
    (403, "AccessDenied.Unpurchased", None, "denied", PermissionDeniedError, False, True),
    (403, "Model.AccessDenied", None, "no access to model", PermissionDeniedError, False, True),
    (403, "AllocationQuota.FreeTierOnly", None, "free tier only", QuotaExceededError, False, True),
    (404, "ModelNotFound", "model_not_found", "no such model", ModelNotFoundError, False, True),
    (429, "Throttling", None, "throttled", RateLimitError, True, False),
    (
        429,
        "Throttling.RateQuota",
        "limit_requests",
        "Requests rate limit exceeded",
        RateLimitError,
        True,
        False,
    ),
    (
        429,
        "Throttling.BurstRate",
        "limit_burst_rate",
        "ramped too fast",
        RateLimitError,
        True,
        False,
    ),
    (
        429,
        "Throttling.AllocationQuota",
        "insufficient_quota",
        "Allocated quota exceeded",
        RateLimitError,
        True,
        False,
    ),
    (
        429,
        "Throttling.AllocationQuota",
        "insufficient_quota",
        "Free allocated quota exceeded.",
        QuotaExceededError,
        False,
        True,
    ),
    (429, "PrepaidBillOverdue", None, "bill overdue", QuotaExceededError, False, True),
    (500, "InternalError", None, "oops", ServerError, True, False),
    (500, "InternalError.Algo", None, "oops", ServerError, True, False),
    (500, "SystemError", None, "oops", ServerError, True, False),
    (500, "ModelServiceFailed", None, "oops", ServerError, True, False),
    (500, "RequestTimeOut", None, "300 s cap", ServerError, True, False),
    (503, "ModelUnavailable", None, "later", ServerError, True, False),
    (503, "ServiceUnavailable", None, "later", ServerError, True, False),
]


def native_body(code: str, message: str) -> bytes:
    return json.dumps({"request_id": "req-n", "code": code, "message": message}).encode()


def compatible_body(code: str, message: str) -> bytes:
    error = {"message": message, "type": "invalid_request_error", "param": None, "code": code}
    return json.dumps({"error": error, "request_id": "req-c"}).encode()


@pytest.mark.parametrize(
    ("status", "native", "compat", "message", "cls", "retryable", "stops"), TABLE
)
def test_native_error_table(
    status: int,
    native: str,
    compat: str | None,
    message: str,
    cls: type[QwenError],
    retryable: bool,
    stops: bool,
) -> None:
    error = error_from_response(status, native_body(native, message))
    assert type(error) is cls
    assert (error.status, error.code, error.message, error.request_id) == (
        status,
        native,
        message,
        "req-n",
    )
    assert (error.retryable, error.stops_batch) == (retryable, stops)


@pytest.mark.parametrize(
    ("status", "native", "compat", "message", "cls", "retryable", "stops"),
    [r for r in TABLE if r[2]],
)
def test_compatible_error_table(
    status: int,
    native: str,
    compat: str,
    message: str,
    cls: type[QwenError],
    retryable: bool,
    stops: bool,
) -> None:
    error = error_from_response(status, compatible_body(compat, message))
    assert type(error) is cls
    assert (error.status, error.code, error.request_id) == (status, compat, "req-c")
    assert (error.retryable, error.stops_batch) == (retryable, stops)


@pytest.mark.parametrize(
    ("status", "native", "compat", "message", "cls", "retryable", "stops"), TABLE
)
def test_codes_alone_classify_errors_without_a_status(
    status: int,
    native: str,
    compat: str | None,
    message: str,
    cls: type[QwenError],
    retryable: bool,
    stops: bool,
) -> None:
    # Errors inside a stream come with no HTTP status of their own.
    error = error_from_response(None, native_body(native, message))
    assert type(error) is cls
    assert error.status == status


@pytest.mark.parametrize(
    ("status", "body", "cls", "code"),
    [
        (502, b"<html>Bad Gateway</html>", ServerError, "server_error"),
        (418, b"", InvalidRequestError, "invalid_request"),
        (429, b"{}", RateLimitError, "rate_limited"),
        (
            500,
            json.dumps({"error": {"message": "m", "type": "server_error", "code": None}}).encode(),
            ServerError,
            "server_error",
        ),
    ],
)
def test_bodies_without_a_code_fall_back_to_the_status(
    status: int, body: bytes, cls: type[QwenError], code: str
) -> None:
    error = error_from_response(status, body)
    assert type(error) is cls
    assert error.code == code
    assert error.message  # never empty: the body text or "HTTP <status>"


def test_compatible_error_without_code_uses_its_type() -> None:
    body = {"error": {"message": "m", "type": "invalid_request_error", "param": None, "code": None}}
    assert error_fields(body) == ("invalid_request_error", "m", None)


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "7"}, 7.0),
        ({"retry-after-ms": "1500"}, 1.5),
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),  # in the past: no wait
        ({}, None),
    ],
)
def test_retry_after_is_read_from_headers(headers: dict[str, str], expected: float | None) -> None:
    error = error_from_response(429, native_body("Throttling", "slow down"), headers)
    assert error.retry_after == expected


def every_error() -> list[QwenError]:
    """One error of each class, each built from a body that echoes the key."""
    leaky = f"key {API_KEY} rejected"
    errors = [
        error_from_response(status, native_body(code, leaky), secret=API_KEY)
        for status, code, *_ in TABLE
    ]
    errors += [
        error_from_response(status, compatible_body(code, leaky), secret=API_KEY)
        for status, _, code, *_ in TABLE
        if code
    ]
    errors.append(error_from_response(502, leaky.encode(), secret=API_KEY))
    errors.append(error_from_response(400, native_body(API_KEY, "x"), secret=API_KEY))
    return errors


def test_api_key_never_appears_in_errors() -> None:
    errors = every_error()
    assert {type(e) for e in errors} >= {
        InvalidRequestError,
        AuthenticationError,
        PermissionDeniedError,
        ModelNotFoundError,
        RateLimitError,
        QuotaExceededError,
        ServerError,
    }
    for error in errors:
        for text in (str(error), repr(error), repr(error.args), error.message, error.code):
            assert API_KEY not in text


@pytest.mark.parametrize("error", every_error()[:8])
def test_errors_survive_pickling_with_their_fields(error: QwenError) -> None:
    copy = pickle.loads(pickle.dumps(error))  # noqa: S301 - our own bytes: Celery's path
    assert type(copy) is type(error)
    fields: list[Any] = ["message", "code", "status", "request_id", "retry_after"]
    assert [getattr(copy, f) for f in fields] == [getattr(error, f) for f in fields]


def test_every_error_is_a_qocr_error_with_a_one_line_docstring() -> None:
    import qocr.qwen.errors as module

    classes = [c for c in vars(module).values() if isinstance(c, type) and issubclass(c, QwenError)]
    assert len(classes) >= 13
    for cls in classes:
        assert issubclass(cls, QocrError)
        assert cls.__doc__ and cls.__doc__.strip().splitlines()[0].endswith(".")
