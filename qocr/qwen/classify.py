"""Error classification, sans I/O: HTTP status + error body (+ headers) → a :class:`QwenError`.

Both body shapes are read: native ``{request_id, code, message}`` and compatible
``{error: {message, type, param, code}, request_id}``. Billing codes decide first (they
arrive as 400, 403 or 429 but all mean "this account cannot pay"), then the status. Errors
inside a stream carry no status of their own; we take it from DashScope's
``:HTTP_STATUS/nnn`` comment, or infer it from the code.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from qocr.qwen.errors import (
    AuthenticationError,
    InvalidRequestError,
    ModelNotFoundError,
    PermissionDeniedError,
    QuotaExceededError,
    QwenError,
    RateLimitError,
    ServerError,
)
from qocr.qwen.retry import parse_retry_after

_QUOTA_CODES = frozenset(
    {
        "Arrearage",
        "PrepaidBillOverdue",
        "PostpaidBillOverdue",
        "AllocationQuota.FreeTierOnly",
    }
)
_FREE_QUOTA_MESSAGE = "free allocated quota exceeded"

# Status implied by a code, for errors that arrive without one (inside a stream).
_CODE_STATUS = {
    "InvalidParameter": 400,
    "invalid_parameter_error": 400,
    "InvalidURL": 400,
    "DataInspectionFailed": 400,
    "data_inspection_failed": 400,
    "BadRequest.TooLarge": 400,
    "Arrearage": 400,
    "InvalidApiKey": 401,
    "invalid_api_key": 401,
    "Model.AccessDenied": 403,
    "AllocationQuota.FreeTierOnly": 403,
    "ModelNotFound": 404,
    "model_not_found": 404,
    "limit_requests": 429,
    "limit_burst_rate": 429,
    "insufficient_quota": 429,
    "PrepaidBillOverdue": 429,
    "SystemError": 500,
    "ModelServiceFailed": 500,
    "RequestTimeOut": 500,
    "ModelUnavailable": 503,
    "ServiceUnavailable": 503,
}
_PREFIX_STATUS = (("AccessDenied", 403), ("Throttling", 429), ("InternalError", 500))
_MAX_MESSAGE_CHARS = 500


def redact(text: str, secret: str | None) -> str:
    """``text`` with every occurrence of ``secret`` (the API key) masked."""
    if secret and len(secret) >= 4:
        return text.replace(secret, "[redacted]")
    return text


def _status_for_code(code: str | None) -> int | None:
    if not code:
        return None
    if code in _CODE_STATUS:
        return _CODE_STATUS[code]
    return next((status for prefix, status in _PREFIX_STATUS if code.startswith(prefix)), None)


def error_fields(body: Any) -> tuple[str | None, str | None, str | None]:
    """(code, message, request_id) of a decoded error body of either shape."""
    if not isinstance(body, Mapping):
        return None, None, None
    request_id = body.get("request_id")
    nested = body.get("error")
    if isinstance(nested, Mapping):
        code = nested.get("code") or nested.get("type")
        message = nested.get("message")
        request_id = request_id or nested.get("request_id")
    else:
        code, message = body.get("code"), body.get("message")
    return (
        str(code) if code else None,
        str(message) if message else None,
        str(request_id) if request_id else None,
    )


def _decode(body: bytes | str | Mapping[str, Any] | None) -> tuple[Any, str]:
    if isinstance(body, Mapping):
        return body, ""
    if body is None:
        return None, ""
    text = body.decode("utf-8", "replace") if isinstance(body, bytes) else body
    try:
        return json.loads(text), text
    except ValueError:
        return None, text


def error_class(status: int | None, code: str | None, message: str | None) -> type[QwenError]:
    """The error class for a status and provider code (status None: inferred from the code)."""
    if code in _QUOTA_CODES or _FREE_QUOTA_MESSAGE in (message or "").lower():
        return QuotaExceededError
    effective = status if status is not None and status >= 400 else _status_for_code(code)
    if effective is None:
        return ServerError  # the server reported a failure it did not describe
    if effective == 401:
        return AuthenticationError
    if effective == 403:
        return PermissionDeniedError
    if effective == 404:
        return ModelNotFoundError
    if effective == 429:
        return RateLimitError
    if effective >= 500:
        return ServerError
    return InvalidRequestError


def error_from_response(
    status: int | None,
    body: bytes | str | Mapping[str, Any] | None,
    headers: Mapping[str, str] | None = None,
    *,
    secret: str | None = None,
    request_id: str | None = None,
) -> QwenError:
    """Build the error for a failed answer; ``secret`` (the API key) is redacted from text."""
    data, text = _decode(body)
    code, message, body_request_id = error_fields(data)
    if message is None:
        # Redacted before it is cut: a cut through the key would leave part of it behind.
        message = redact(text.strip(), secret)[:_MAX_MESSAGE_CHARS] or f"HTTP {status}"
    cls = error_class(status, code, message)
    # QwenError caps the message, the code and the request id (qocr.qwen.caps).
    return cls(
        redact(message, secret),
        code=redact(code, secret) if code else None,
        status=status if status is not None and status >= 400 else _status_for_code(code),
        request_id=body_request_id or request_id,
        retry_after=parse_retry_after(headers or {}),
    )
