"""Prometheus metrics of the workers: the hooks the item story calls, in every process.

``qocr worker --metrics-port PORT`` calls :func:`enable` before the pool forks; from then on
every process (the prefork children included) counts into files of one directory
(prometheus_client's multiprocess mode, ``PROMETHEUS_MULTIPROC_DIR``), and the main
process serves their sum on ``/metrics`` (:mod:`worker.metrics_server`), next to gauges it
reads from SQL and Redis at scrape time. Until :func:`enable` runs (``qocr run``, tests,
a worker without the option) every hook is a no-op costing one global lookup.

prometheus_client picks its value storage when it is first imported, from that variable:
this module therefore imports it only inside :func:`enable`, so importing the hooks (as
``worker/process.py`` does) never fixes the storage too early.

Labels are bounded: models, states, outcomes and error codes only (never an item id or a
source), and a label that keeps taking new values is folded into ``other``.
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from qocr.qwen.errors import (
    APIConnectionError,
    APITimeoutError,
    ProtocolError,
    QwenError,
    RateLimitError,
)

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Outcomes of one provider call (the label of qocr_provider_calls_total).
CALL_OUTCOMES = (
    "ok",
    "rate_limited",  # HTTP 429: rate, burst or token limit
    "client_error",  # another 4xx: the request or the account
    "server_error",  # 5xx
    "timeout",
    "connection",
    "protocol",  # an answer that could not be read
    "other",
)
OTHER = "other"
MAX_MODELS = 20
MAX_CODES = 100
CODE_MAX_CHARS = 64
# Seconds: calls take 0.3 to 30 s; throttle waits up to LIMITS.throttle_max_wait_seconds.
LATENCY_BUCKETS = (0.25, 0.5, 1, 2, 3, 5, 8, 13, 20, 30, 60, 120)
WAIT_BUCKETS = (0, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20)


@dataclass(frozen=True)
class _Metrics:
    items_finished: Any
    calls: Any
    tokens: Any
    call_latency: Any
    throttle_wait: Any


_metrics: _Metrics | None = None
_lock = threading.Lock()
_seen: dict[str, set[str]] = {"model": set(), "code": set()}


def enable(directory: Path) -> None:
    """Count into ``directory`` from now on, in this process and every child forked after.

    The directory is emptied first: files left by an earlier run would be summed in.
    """
    global _metrics
    directory.mkdir(parents=True, exist_ok=True)
    for stale in directory.glob("*.db"):
        stale.unlink()
    os.environ[MULTIPROC_ENV] = str(directory)  # read by prometheus_client at import
    from prometheus_client import Counter, Histogram, values

    # Imported earlier in this process (a test): pick the multiprocess storage anyway.
    values.ValueClass = values.get_value_class()  # type: ignore[no-untyped-call]
    _metrics = _Metrics(
        items_finished=Counter(
            "qocr_items_finished_total",
            "Items that reached a terminal state, by state and error code.",
            ["state", "code"],
        ),
        calls=Counter(
            "qocr_provider_calls_total",
            "Calls to the Qwen-OCR API, by model and outcome (rate_limited: HTTP 429).",
            ["model", "outcome"],
        ),
        tokens=Counter(
            "qocr_tokens_total",
            "Tokens billed by successful calls, by model and kind (input includes image).",
            ["model", "kind"],
        ),
        call_latency=Histogram(
            "qocr_call_latency_seconds",
            "Duration of one call to the Qwen-OCR API, by model.",
            ["model"],
            buckets=LATENCY_BUCKETS,
        ),
        throttle_wait=Histogram(
            "qocr_throttle_wait_seconds",
            "Time a call waited for its slot in the fleet's rate limit, by model.",
            ["model"],
            buckets=WAIT_BUCKETS,
        ),
    )


def enabled() -> bool:
    return _metrics is not None


def disable() -> None:
    """Stop counting (tests); the directory's files stay."""
    global _metrics
    _metrics = None


# -- the hooks ----------------------------------------------------------------------------


def record_call(model: str, outcome: str, latency_seconds: float) -> None:
    """One call to the provider ended (``outcome``: one of :data:`CALL_OUTCOMES`)."""
    metrics = _metrics
    if metrics is None:
        return
    model = _bounded("model", model, MAX_MODELS)
    metrics.calls.labels(model, outcome if outcome in CALL_OUTCOMES else OTHER).inc()
    metrics.call_latency.labels(model).observe(max(latency_seconds, 0.0))


def record_tokens(model: str, input_tokens: int, output_tokens: int) -> None:
    """The usage a successful call was billed."""
    metrics = _metrics
    if metrics is None:
        return
    model = _bounded("model", model, MAX_MODELS)
    metrics.tokens.labels(model, "input").inc(max(input_tokens, 0))
    metrics.tokens.labels(model, "output").inc(max(output_tokens, 0))


def record_throttle_wait(model: str, wait_seconds: float) -> None:
    """A call got its throttle slot after waiting ``wait_seconds``."""
    metrics = _metrics
    if metrics is None:
        return
    metrics.throttle_wait.labels(_bounded("model", model, MAX_MODELS)).observe(
        max(wait_seconds, 0.0)
    )


def record_finished(state: str, code: str | None = None, count: int = 1) -> None:
    """``count`` items reached a terminal state (``succeeded``, ``failed``, ``cancelled``)
    with the error ``code`` (None for a success)."""
    metrics = _metrics
    if metrics is None or count <= 0:
        return
    label = _bounded("code", code[:CODE_MAX_CHARS], MAX_CODES) if code else ""
    metrics.items_finished.labels(state, label).inc(count)


def call_outcome(error: BaseException | None) -> str:
    """The ``outcome`` label of a call that raised ``error`` (None: it succeeded)."""
    if error is None:
        return "ok"
    if isinstance(error, RateLimitError):
        return "rate_limited"
    if isinstance(error, APITimeoutError):
        return "timeout"
    if isinstance(error, APIConnectionError):
        return "connection"
    if isinstance(error, ProtocolError):
        return "protocol"
    if isinstance(error, QwenError) and error.status is not None:
        if error.status == 429:
            return "rate_limited"
        if error.status >= 500:
            return "server_error"
        if error.status >= 400:
            return "client_error"
    return OTHER


def _bounded(kind: str, value: str, limit: int) -> str:
    """``value``, unless ``limit`` other values of this label were seen already."""
    seen = _seen[kind]
    if value in seen:
        return value
    with _lock:
        if len(seen) >= limit:
            return OTHER
        seen.add(value)
    return value
