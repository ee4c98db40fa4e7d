"""The emulator's configuration: one validated value object, built by the CLI or by tests."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

RecognizerName = Literal["auto", "rapidocr", "hash"]
RECOGNIZERS: tuple[RecognizerName, ...] = ("auto", "rapidocr", "hash")


@dataclass(frozen=True)
class EmulatorConfig:
    """How the emulator listens, limits and misbehaves.

    ``rpm`` / ``tpm`` are enforced per second (RPM/60 requests, TPM/60 tokens in any one-second
    window); None means unlimited. ``latency_ms`` is a (low, high) range in milliseconds, drawn
    uniformly per request. ``error_rate`` and ``drop_rate`` are probabilities in [0, 1].
    ``api_key``: when set, requests must carry ``Authorization: Bearer <api_key>``.
    ``seed``: fault, latency and request-id draws become reproducible for a given request order.
    ``recognizer``: ``auto`` reads the text with RapidOCR when it is installed, else ``hash``
    (deterministic words derived from the image bytes).
    """

    host: str = "127.0.0.1"
    port: int = 8000
    rpm: int | None = None
    tpm: int | None = None
    latency_ms: tuple[float, float] = (0.0, 0.0)
    error_rate: float = 0.0
    drop_rate: float = 0.0
    api_key: str | None = None
    seed: int | None = None
    recognizer: RecognizerName = "auto"
    # Loopback image URLs are fetched with this timeout (the real service gives up too).
    fetch_timeout_s: float = 10.0
    # Output tokens per streamed chunk; the real service sends one to a few.
    stream_chunk_tokens: int = 3

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in [0, 65535], got {self.port}")
        for name in ("rpm", "tpm"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or value <= 0):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        low, high = self.latency_ms
        if not (math.isfinite(low) and math.isfinite(high)) or low < 0 or high < low:
            raise ValueError(
                f"latency_ms must be (low, high) with 0 <= low <= high, got {low, high}"
            )
        for name in ("error_rate", "drop_rate"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be in [0, 1], got {value}")
        if self.error_rate + self.drop_rate > 1.0:
            raise ValueError("error_rate + drop_rate must not exceed 1")
        if self.recognizer not in RECOGNIZERS:
            raise ValueError(f"recognizer must be one of {', '.join(RECOGNIZERS)}")
        if self.fetch_timeout_s <= 0:
            raise ValueError("fetch_timeout_s must be positive")
        if self.stream_chunk_tokens < 1:
            raise ValueError("stream_chunk_tokens must be at least 1")
