"""What both transports share: configuration, timeouts, and the I/O-free steps of a call.

A transport does only I/O: it sends :meth:`ClientCore.prepare`'s request, then hands the
status, headers and bytes back to :meth:`ClientCore.result` (or a :class:`StreamDecoder`),
and maps its own exceptions with :meth:`ClientCore.transport_error`. Each call also gets a
:class:`~qocr.qwen.budget.CallBudget` (:meth:`ClientCore.budget`): a total deadline and a
size cap, checked on every chunk read.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import httpx

from qocr.qwen.budget import DEFAULT_DEADLINE_SECONDS, CallBudget, check_limits
from qocr.qwen.caps import MAX_FIELD_CHARS, MAX_MESSAGE_CHARS, MAX_RESPONSE_BYTES, cap_chars
from qocr.qwen.catalog import APIS, BASE_URLS, REGIONS, Api, Region, root_url
from qocr.qwen.classify import error_from_response, redact
from qocr.qwen.errors import (
    APIConnectionError,
    APITimeoutError,
    OptionsError,
    ProtocolError,
    QwenError,
)
from qocr.qwen.images import ImageSource, prepare_image
from qocr.qwen.options import RecognizeOptions
from qocr.qwen.parse import header_request_id, load_json, parse_body
from qocr.qwen.request import HttpRequest, build_request
from qocr.qwen.result import OCRResult
from qocr.qwen.stream import StreamDecoder
from qocr.redact import redact_text


@dataclass(frozen=True)
class Timeouts:
    """Seconds allowed for each phase; the total deadline of a call is separate.

    ``read`` bounds the wait for a non-streamed answer (the server itself gives up at 300 s);
    ``stream_idle`` bounds the silence between two chunks of a stream, so a long answer that
    keeps flowing is not cut for being long, while a stalled one fails fast. The client's
    ``deadline_seconds`` bounds the whole call, however the answer trickles.
    """

    connect: float = 10.0
    read: float = 120.0
    stream_idle: float = 30.0
    write: float = 30.0
    pool: float = 10.0

    def __post_init__(self) -> None:
        for phase in fields(self):
            seconds = getattr(self, phase.name)
            if not (math.isfinite(seconds) and seconds > 0):
                raise OptionsError(f"timeout {phase.name} must be finite and positive")

    @classmethod
    def of(cls, timeout: float | Timeouts) -> Timeouts:
        """A single number means: that many seconds for every phase (connect at most 10)."""
        if isinstance(timeout, Timeouts):
            return timeout
        seconds = float(timeout)
        if not (math.isfinite(seconds) and seconds > 0):
            raise OptionsError("timeout must be finite and positive")
        return cls(min(10.0, seconds), seconds, seconds, seconds, seconds)

    def httpx(self, stream: bool) -> httpx.Timeout:
        """The httpx timeout of one request; httpx's read timeout is per read, i.e. idle time."""
        return httpx.Timeout(
            connect=self.connect,
            read=self.stream_idle if stream else self.read,
            write=self.write,
            pool=self.pool,
        )


DEFAULT_TIMEOUTS = Timeouts()


def _secret_value(api_key: Any) -> str:
    # Accept the settings' SecretStr as well as a plain string.
    value = api_key.get_secret_value() if hasattr(api_key, "get_secret_value") else api_key
    if not isinstance(value, str) or not value:
        raise OptionsError("api_key must be a non-empty string", code="invalid_api_key")
    return value


def _is_event_stream(headers: Mapping[str, str]) -> bool:
    return "text/event-stream" in headers.get("content-type", "").lower()


class ClientCore:
    """The configured, I/O-free half of a client."""

    def __init__(
        self,
        api_key: Any,
        *,
        region: Region = "intl",
        base_url: str | None = None,
        api: Api = "compatible",
        timeout: float | Timeouts = DEFAULT_TIMEOUTS,
        deadline_seconds: float = DEFAULT_DEADLINE_SECONDS,
        max_response_bytes: int = MAX_RESPONSE_BYTES,
    ) -> None:
        if api not in APIS:
            raise OptionsError(f"api must be one of {', '.join(APIS)}, not {api!r}")
        if region not in REGIONS:
            raise OptionsError(f"region must be one of {', '.join(REGIONS)}, not {region!r}")
        if base_url is not None and not base_url.startswith(("http://", "https://")):
            raise OptionsError("base_url must start with http:// or https://")
        self._api_key = _secret_value(api_key)
        self.api: Api = api
        self.region: Region = region
        self.base_url = root_url(base_url) if base_url else BASE_URLS[region]
        self.timeouts = Timeouts.of(timeout)
        check_limits(deadline_seconds, max_response_bytes)
        self.deadline_seconds = float(deadline_seconds)
        self.max_response_bytes = max_response_bytes

    def __repr__(self) -> str:
        return f"ClientCore(api={self.api!r}, base_url={self.base_url!r})"

    def prepare(self, image: ImageSource, options: RecognizeOptions) -> HttpRequest:
        """Check the image and build the request; raises ImageError before any I/O."""
        prepared = prepare_image(image)
        return build_request(self.api, self.base_url, self._api_key, prepared.url, options)

    def budget(self) -> CallBudget:
        """The deadline and size cap of a call starting now."""
        return CallBudget(self.deadline_seconds, self.max_response_bytes)

    def is_stream(self, status: int, headers: Mapping[str, str]) -> bool:
        """Whether a response to a stream request is really a stream (errors come as JSON)."""
        return status < 400 and _is_event_stream(headers)

    def decoder(self, options: RecognizeOptions, headers: Mapping[str, str]) -> StreamDecoder:
        """A fresh decoder for the stream answering ``options``."""
        return StreamDecoder(
            self.api,
            task=options.task,
            model=options.model,
            request_id=header_request_id(headers),
            secret=self._api_key,
            # native_body always asks for incremental_output: every event is a delta.
            incremental=True,
        )

    def result(
        self,
        options: RecognizeOptions,
        status: int,
        headers: Mapping[str, str],
        body: bytes,
    ) -> OCRResult:
        """The result of a complete (non-streamed) answer, or its error."""
        request_id = header_request_id(headers)
        if status >= 400:
            raise error_from_response(
                status, body, headers, secret=self._api_key, request_id=request_id
            )
        data = load_json(body)
        if isinstance(data, dict) and (
            "error" in data or (data.get("code") and "output" not in data)
        ):
            # A success status around an error body (DashScope SDK style).
            raise error_from_response(
                None, data, headers, secret=self._api_key, request_id=request_id
            )
        return parse_body(
            self.api, data, task=options.task, request_id=request_id, model=options.model
        )

    def scrub(self, error: QwenError) -> QwenError:
        """Last line of defence: no API key, and no presigned URL's signature or credential
        (a provider error may quote the image URL), in any message we raise."""
        message = redact_text(redact(error.message, self._api_key))
        error.message = cap_chars(message, MAX_MESSAGE_CHARS)
        error.code = cap_chars(redact(error.code, self._api_key), MAX_FIELD_CHARS)
        error.args = (error.message,)
        return error

    def transport_error(self, exc: httpx.HTTPError, *, stream: bool) -> QwenError:
        """Map an httpx failure to our tree; timeouts and dropped connections are retryable."""
        detail = redact(str(exc) or type(exc).__name__, self._api_key)
        if isinstance(exc, httpx.ReadTimeout):
            phase = "no stream chunk within" if stream else "no answer within"
            limit = self.timeouts.stream_idle if stream else self.timeouts.read
            code = "stream_idle_timeout" if stream else "read_timeout"
            return APITimeoutError(f"{phase} {limit:g} s: {detail}", code=code)
        if isinstance(exc, httpx.ConnectTimeout):
            return APITimeoutError(
                f"could not connect within {self.timeouts.connect:g} s: {detail}",
                code="connect_timeout",
            )
        if isinstance(exc, httpx.TimeoutException):
            return APITimeoutError(f"timed out: {detail}", code="timeout")
        if isinstance(exc, httpx.UnsupportedProtocol):
            return OptionsError(f"invalid base_url: {detail}", code="invalid_base_url")
        if isinstance(exc, httpx.RemoteProtocolError):
            return APIConnectionError(
                f"connection dropped by the server: {detail}", code="connection_dropped"
            )
        if isinstance(exc, httpx.DecodingError):
            return ProtocolError(f"undecodable answer: {detail}")
        return APIConnectionError(f"connection failed: {detail}")
