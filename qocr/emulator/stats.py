"""What the emulator served, for ``GET /_stats``: counts a test can assert on.

Only API requests are counted (not ``/_stats`` itself). A success is a request answered in
full with HTTP 200; throttled, failed, dropped and cut-short requests are not successes. The
success times are the instants successful requests were admitted (when the rate limits
counted them, their bodies read), in seconds since the epoch.
"""

from __future__ import annotations

import time
from collections import Counter, deque
from typing import Any

MAX_SUCCESS_TIMES = 100_000  # memory bound for long rehearsals; older times are forgotten


class Stats:
    """Counters of one emulator run; :meth:`snapshot` gives the JSON of ``/_stats``."""

    def __init__(self) -> None:
        self.reset()

    def reset(self) -> None:
        self.started_at = time.time()
        self.requests = 0
        self.successes = 0
        self.drops = 0
        self.hangs = 0
        self.trickles = 0
        self.by_status: Counter[int] = Counter()
        self.by_error_code: Counter[str] = Counter()
        self.by_api: Counter[str] = Counter()
        self.successes_per_image: Counter[str] = Counter()
        # Every admitted request, per image: what a client's retries cost, paid or not.
        self.requests_per_image: Counter[str] = Counter()
        self.input_tokens = 0
        self.output_tokens = 0
        self.image_tokens = 0
        self.success_times: deque[float] = deque(maxlen=MAX_SUCCESS_TIMES)

    def request(self, api: str) -> None:
        self.requests += 1
        self.by_api[api] += 1

    def admitted(self, image_keys: list[str]) -> None:
        for key in image_keys:
            self.requests_per_image[key] += 1

    def error(self, status: int, code: str) -> None:
        self.by_status[status] += 1
        self.by_error_code[code] += 1

    def drop(self) -> None:
        self.drops += 1

    def hang(self) -> None:
        self.hangs += 1

    def trickle(self) -> None:
        self.trickles += 1

    def success(
        self,
        *,
        admitted_at: float,
        image_keys: list[str],
        input_tokens: int,
        output_tokens: int,
        image_tokens: int,
    ) -> None:
        self.successes += 1
        self.by_status[200] += 1
        for key in image_keys:
            self.successes_per_image[key] += 1
        self.input_tokens += input_tokens
        self.output_tokens += output_tokens
        self.image_tokens += image_tokens
        self.success_times.append(admitted_at)

    def snapshot(self) -> dict[str, Any]:
        per_second: Counter[int] = Counter(int(t) for t in self.success_times)
        per_minute: Counter[int] = Counter(int(t // 60) for t in self.success_times)
        return {
            "started_at": self.started_at,
            "requests": self.requests,
            "successes": self.successes,
            "drops": self.drops,
            "hangs": self.hangs,
            "trickles": self.trickles,
            "by_status": {str(k): v for k, v in sorted(self.by_status.items())},
            "by_error_code": dict(sorted(self.by_error_code.items())),
            "by_api": dict(sorted(self.by_api.items())),
            "tokens": {
                "input": self.input_tokens,
                "output": self.output_tokens,
                "image": self.image_tokens,
                "total": self.input_tokens + self.output_tokens,
            },
            "successes_per_image": dict(sorted(self.successes_per_image.items())),
            "requests_per_image": dict(sorted(self.requests_per_image.items())),
            "success_times": list(self.success_times),
            "successes_per_second": {str(k): v for k, v in sorted(per_second.items())},
            "successes_per_minute": {str(k): v for k, v in sorted(per_minute.items())},
            "max_successes_in_any_second": max_in_window(list(self.success_times), 1.0),
        }


def max_in_window(times: list[float], window_s: float) -> int:
    """The largest number of ``times`` inside any half-open window of ``window_s`` seconds."""
    ordered = sorted(times)
    best = 0
    start = 0
    for end, t in enumerate(ordered):
        while ordered[start] <= t - window_s:
            start += 1
        best = max(best, end - start + 1)
    return best
