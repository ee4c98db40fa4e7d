"""Retries in one place: three small pure functions and a tenacity policy built from them.

Retries are not inside ``recognize``: the worker wraps calls with :func:`retry_policy`
(sync) or :func:`async_retry_policy`. A Retry-After longer than ``max_single_wait_seconds``
is not retried in-process: the error is re-raised so the caller can reschedule the task
with ``countdown >= error.retry_after``; we never retry sooner than the server asked.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from email.utils import parsedate_to_datetime
from typing import Any

import tenacity

from qocr.qwen.errors import QwenError

DEFAULT_BASE_SECONDS = 0.5
DEFAULT_CAP_SECONDS = 8.0


def parse_retry_after(headers: Mapping[str, str], now: float | None = None) -> float | None:
    """Seconds to wait from ``retry-after-ms``, or ``Retry-After`` (seconds or an HTTP date)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    milliseconds = lowered.get("retry-after-ms")
    if milliseconds is not None:
        try:
            return max(float(milliseconds) / 1000.0, 0.0)
        except ValueError:
            pass
    value = lowered.get("retry-after")
    if value is None:
        return None
    try:
        return max(float(value), 0.0)
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        return None
    current = time.time() if now is None else now
    return max(when.timestamp() - current, 0.0)


def should_retry(error: BaseException) -> bool:
    """True for errors a later identical call may survive (rate limits, 5xx, network)."""
    return isinstance(error, QwenError) and error.retryable and not error.stops_batch


def backoff_seconds(
    attempt: int,
    retry_after: float | None = None,
    base: float = DEFAULT_BASE_SECONDS,
    cap: float = DEFAULT_CAP_SECONDS,
    rand: Callable[[], float] = random.random,
) -> float:
    """Full-jitter exponential delay before retry number ``attempt`` (1-based).

    Uniform in [0, min(cap, base·2^(attempt-1))), but never shorter than ``retry_after``.
    """
    ceiling = min(cap, base * 2.0 ** max(attempt - 1, 0))
    return max(ceiling * rand(), retry_after or 0.0)


def _retry_after_of(state: tenacity.RetryCallState) -> float | None:
    outcome = state.outcome
    error = outcome.exception() if outcome is not None else None
    return error.retry_after if isinstance(error, QwenError) else None


def _policy(
    max_attempts: int,
    max_total_seconds: float,
    max_single_wait_seconds: float,
    base: float,
    cap: float,
) -> dict[str, Any]:
    def retryable(error: BaseException) -> bool:
        if not should_retry(error):
            return False
        wait = error.retry_after if isinstance(error, QwenError) else None
        # The server asked for a longer pause than a worker slot should sleep: reschedule.
        return wait is None or wait <= max_single_wait_seconds

    def wait(state: tenacity.RetryCallState) -> float:
        delay = backoff_seconds(state.attempt_number, _retry_after_of(state), base, cap)
        return min(delay, max(max_single_wait_seconds, _retry_after_of(state) or 0.0))

    return {
        "retry": tenacity.retry_if_exception(retryable),
        "wait": wait,
        # stop_before_delay: do not start a sleep that would overrun the total budget.
        "stop": tenacity.stop_after_attempt(max_attempts)
        | tenacity.stop_before_delay(max_total_seconds),
        "reraise": True,
    }


def retry_policy(
    max_attempts: int = 4,
    max_total_seconds: float = 60.0,
    max_single_wait_seconds: float = 20.0,
    *,
    base: float = DEFAULT_BASE_SECONDS,
    cap: float = DEFAULT_CAP_SECONDS,
    sleep: Callable[[float], None] = time.sleep,
) -> tenacity.Retrying:
    """A tenacity ``Retrying`` for sync calls: ``retry_policy()(client.recognize, image, ...)``.

    Retries while ``error.retryable``; waits with :func:`backoff_seconds` honouring
    ``retry_after``; stops after ``max_attempts`` or ``max_total_seconds``; re-raises the
    last error itself (not a RetryError).
    """
    return tenacity.Retrying(
        sleep=sleep, **_policy(max_attempts, max_total_seconds, max_single_wait_seconds, base, cap)
    )


def async_retry_policy(
    max_attempts: int = 4,
    max_total_seconds: float = 60.0,
    max_single_wait_seconds: float = 20.0,
    *,
    base: float = DEFAULT_BASE_SECONDS,
    cap: float = DEFAULT_CAP_SECONDS,
) -> tenacity.AsyncRetrying:
    """The same policy as :func:`retry_policy` for ``await client.recognize(...)``."""
    return tenacity.AsyncRetrying(
        **_policy(max_attempts, max_total_seconds, max_single_wait_seconds, base, cap)
    )
