"""Every error the Qwen-OCR client raises, as one tree under :class:`QwenError`.

    QocrError
    └── QwenError                    status, code, message, request_id, retry_after,
        │                            retryable, stops_batch
        ├── InvalidRequestError      400: the item fails with the provider's code
        ├── AuthenticationError      401: stops the batch
        ├── PermissionDeniedError    403: stops the batch
        ├── ModelNotFoundError       404: stops the batch
        ├── RateLimitError           429 rate, burst or token rate: retryable
        ├── QuotaExceededError       billing, arrears, free quota spent: stops the batch
        ├── ServerError              5xx: retryable
        ├── APITimeoutError          no answer in time: retryable
        ├── APIConnectionError       refused, dropped, or a stream cut short: retryable
        ├── ProtocolError            an answer we cannot parse: retryable
        │   └── ResponseTooLargeError    an answer over the size cap: not retried
        ├── ImageError               local, before any call: the image breaks a limit
        └── OptionsError             local, before any call: invalid request options

``code`` is the provider's code verbatim for server errors, and one of ours (``image_too_large``,
``task_unsupported``, ``timeout``...) for local ones. The API key never reaches any message:
the client redacts it from provider text before raising. Whatever the provider sends, a
message holds at most 2,048 characters and a code or request id 200 (:mod:`qocr.qwen.caps`),
cut with a marker, so an over-long answer never reaches storage or a terminal whole.
"""

from __future__ import annotations

from typing import Any, ClassVar

from qocr.errors import QocrError
from qocr.qwen.caps import MAX_FIELD_CHARS, MAX_MESSAGE_CHARS, cap_chars


class QwenError(QocrError):
    """Base class of every error raised by :mod:`qocr.qwen`."""

    code = "qwen_error"
    retryable: ClassVar[bool] = False
    stops_batch: ClassVar[bool] = False

    def __init__(
        self,
        message: str,
        *,
        code: str | None = None,
        status: int | None = None,
        request_id: str | None = None,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(
            cap_chars(message, MAX_MESSAGE_CHARS), code=cap_chars(code, MAX_FIELD_CHARS)
        )
        self.status = status
        self.request_id = cap_chars(request_id, MAX_FIELD_CHARS)
        # Seconds the server asked us to wait (Retry-After / retry-after-ms), when it said so.
        self.retry_after = retry_after

    def __str__(self) -> str:
        details = [f"code={self.code}"]
        if self.status is not None:
            details.append(f"status={self.status}")
        if self.request_id:
            details.append(f"request_id={self.request_id}")
        return f"{self.message} ({', '.join(details)})"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(message={self.message!r}, code={self.code!r}, "
            f"status={self.status!r}, request_id={self.request_id!r}, "
            f"retry_after={self.retry_after!r})"
        )

    def __reduce__(self) -> tuple[Any, ...]:
        # Celery pickles exceptions; keyword-only fields would be lost by the default.
        return (_rebuild, (type(self), self.message, self._fields()))

    def _fields(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "status": self.status,
            "request_id": self.request_id,
            "retry_after": self.retry_after,
        }


def _rebuild(cls: type[QwenError], message: str, fields: dict[str, Any]) -> QwenError:
    return cls(message, **fields)


class InvalidRequestError(QwenError):
    """The provider rejected this request (400); the same request will never succeed."""

    code = "invalid_request"


class AuthenticationError(QwenError):
    """The API key is missing, wrong, or for another region (401)."""

    code = "invalid_api_key"
    stops_batch = True


class PermissionDeniedError(QwenError):
    """The account may not use this model or resource (403)."""

    code = "access_denied"
    stops_batch = True


class ModelNotFoundError(QwenError):
    """The model does not exist in this region (404)."""

    code = "model_not_found"
    stops_batch = True


class RateLimitError(QwenError):
    """A request, burst or token rate limit was hit (429); retry after a wait."""

    code = "rate_limited"
    retryable = True


class QuotaExceededError(QwenError):
    """The account cannot pay for more calls (arrears, billing, free quota spent)."""

    code = "quota_exceeded"
    stops_batch = True


class ServerError(QwenError):
    """The provider failed or is unavailable (5xx); a later retry may succeed."""

    code = "server_error"
    retryable = True


class APITimeoutError(QwenError):
    """No answer (or no stream chunk) arrived within the timeout."""

    code = "timeout"
    retryable = True


class APIConnectionError(QwenError):
    """The connection failed or dropped, or a stream ended before its last event."""

    code = "connection_error"
    retryable = True


class ProtocolError(QwenError):
    """The server answered something that is not the documented protocol.

    Retryable: a truncated or garbled body is a transient gateway fault far more often than
    a stable answer, and the retry policy bounds the attempts anyway.
    """

    code = "protocol_error"
    retryable = True


class ResponseTooLargeError(ProtocolError):
    """The answer is larger than the client reads (:data:`qocr.qwen.caps.MAX_RESPONSE_BYTES`).

    Not retried: no documented answer comes near the cap, and every retry is a paid call.
    """

    code = "response_too_large"
    retryable = False


class ImageError(QwenError):
    """The image breaks a documented limit; found locally before any call."""

    code = "image_invalid"


class OptionsError(QwenError, ValueError):
    """The request options are invalid for the API or model; found before any call."""

    code = "invalid_options"
