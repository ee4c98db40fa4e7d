"""The emulator's configuration: one validated value object, built by the CLI or by tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from qocr.emulator.faults import check_interval, check_latency, check_rates

RecognizerName = Literal["auto", "rapidocr", "hash"]
RECOGNIZERS: tuple[RecognizerName, ...] = ("auto", "rapidocr", "hash")


@dataclass(frozen=True)
class EmulatorConfig:
    """How the emulator listens, limits and misbehaves.

    ``rpm`` / ``tpm`` are enforced as the service does (:mod:`qocr.emulator.limits`): RPM/60
    requests in any one second (``Throttling.BurstRate``), RPM in any minute
    (``Throttling.RateQuota``), TPM tokens in any minute (``Throttling.AllocationQuota``); None
    means unlimited; ``POST /_limits`` changes them while the emulator runs. ``latency_ms``
    is a (low, high) range in milliseconds, drawn uniformly per request. ``error_rate`` and
    ``drop_rate`` are probabilities in [0, 1], as are the faults a hostile provider shows:
    ``hang_rate`` (the request is read and never answered), ``trickle_rate`` (a 200 whose
    body comes one byte, or whose stream one keep-alive comment, every
    ``trickle_interval_s``) and ``long_fields_rate`` (a 500 with a 300-character code and
    request id and a 5 MB message). All rates add up to at most 1;
    ``POST /_faults`` changes them while the emulator runs.
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
    hang_rate: float = 0.0
    trickle_rate: float = 0.0
    long_fields_rate: float = 0.0
    trickle_interval_s: float = 1.0
    api_key: str | None = None
    seed: int | None = None
    recognizer: RecognizerName = "auto"
    # Loopback image URLs are fetched with this timeout (the real service gives up too).
    fetch_timeout_s: float = 10.0
    # Output tokens per streamed chunk; the real service sends one to a few.
    stream_chunk_tokens: int = 3
    # The Batch API (/compatible-mode/v1/files, /batches): lines run per second (0: as
    # fast as they can), and seconds before an unfinished batch expires (24 h).
    batch_lines_per_second: float = 100.0
    batch_window_seconds: float = 86_400.0

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ValueError(f"port must be in [0, 65535], got {self.port}")
        for name in ("rpm", "tpm"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or value <= 0):
                raise ValueError(f"{name} must be a positive integer, got {value!r}")
        check_latency(self.latency_ms)
        check_rates(self.fault_rates())
        check_interval(self.trickle_interval_s)
        if self.recognizer not in RECOGNIZERS:
            raise ValueError(f"recognizer must be one of {', '.join(RECOGNIZERS)}")
        if self.fetch_timeout_s <= 0:
            raise ValueError("fetch_timeout_s must be positive")
        if self.stream_chunk_tokens < 1:
            raise ValueError("stream_chunk_tokens must be at least 1")
        if self.batch_lines_per_second < 0 or self.batch_window_seconds <= 0:
            raise ValueError("batch_lines_per_second must be >= 0, batch_window_seconds > 0")

    def fault_rates(self) -> dict[str, float]:
        """The probability of each injected fault, by setting name."""
        return {
            "drop_rate": self.drop_rate,
            "error_rate": self.error_rate,
            "hang_rate": self.hang_rate,
            "trickle_rate": self.trickle_rate,
            "long_fields_rate": self.long_fields_rate,
        }
