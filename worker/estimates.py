"""What one call will cost in tokens, reserved against the TPM budget before it leaves.

A call costs image tokens + input text tokens + output tokens:

* **image**: exact from a local image's size (the documented resize rule,
  :func:`qocr.qwen.tokens.image_tokens`); an http(s) URL's size is unknown before the call,
  so it is a high percentile of what this model's URL images cost, and until one was seen
  the largest image the model takes;
* **input text** (prompt and template): what the service counted for this model and task,
  once seen; until then our high guess (:func:`qocr.qwen.tokens.prompt_tokens`);
* **output**: a high percentile (:data:`PERCENTILE`) of the output tokens of the last
  :data:`WINDOW_CALLS` calls of this model and task, never above ``max_tokens``. A mean
  would under-reserve half the calls, and each under-reservation lets the next calls leave
  early; the throttle charges overruns and refunds what a call did not use, so a high
  percentile costs no throughput.

Learned per process (each worker learns in a few calls); thread-safe.
"""

from __future__ import annotations

import bisect
import math
import threading
from collections import deque
from dataclasses import dataclass
from typing import TypeVar

from qocr.qwen.images import ImageInfo
from qocr.qwen.options import RecognizeOptions
from qocr.qwen.result import Usage
from qocr.qwen.tokens import image_tokens, max_image_tokens, prompt_tokens

PERCENTILE = 0.9
WINDOW_CALLS = 200
# Until this many calls were seen the largest one seen stands for the percentile (a p90 of
# three calls is their maximum anyway, and the first calls of a run set the pace).
MIN_CALLS = 10
# Output tokens assumed before any call of this model and task answered.
INITIAL_OUTPUT_TOKENS = 400

_K = TypeVar("_K")


class SlidingPercentile:
    """A percentile of the last ``size`` values (nearest rank), updated in O(size)."""

    def __init__(self, size: int) -> None:
        if size < 1:
            raise ValueError("size must be at least 1")
        self._size = size
        self._arrival: deque[int] = deque()
        self._sorted: list[int] = []

    def __len__(self) -> int:
        return len(self._arrival)

    def add(self, value: int) -> None:
        if len(self._arrival) == self._size:
            oldest = self._arrival.popleft()
            del self._sorted[bisect.bisect_left(self._sorted, oldest)]
        self._arrival.append(value)
        bisect.insort(self._sorted, value)

    def percentile(self, share: float) -> int | None:
        """The smallest value at least ``share`` of the values do not exceed; None if empty."""
        if not self._sorted:
            return None
        rank = max(1, math.ceil(share * len(self._sorted)))
        return self._sorted[rank - 1]

    def high(self, share: float, min_count: int) -> int | None:
        """The percentile once ``min_count`` values are in; the largest value before."""
        if len(self._sorted) < min_count:
            return self._sorted[-1] if self._sorted else None
        return self.percentile(share)


@dataclass(frozen=True)
class Estimate:
    """Tokens one call is expected to cost, by part."""

    image_tokens: int
    text_tokens: int
    output_tokens: int

    @property
    def total(self) -> int:
        return self.image_tokens + self.text_tokens + self.output_tokens


def task_key(options: RecognizeOptions) -> tuple[str, str]:
    """Calls of one model and task cost alike (a custom prompt counts as its own task)."""
    return options.model, options.task or ""


class TokenEstimator:
    """Estimates each call's tokens from its image and what earlier calls cost."""

    def __init__(
        self,
        percentile: float = PERCENTILE,
        window_calls: int = WINDOW_CALLS,
        min_calls: int = MIN_CALLS,
    ) -> None:
        self._percentile = percentile
        self._window = window_calls
        self._min_calls = min_calls
        self._output: dict[tuple[str, str], SlidingPercentile] = {}
        self._text: dict[tuple[str, str], SlidingPercentile] = {}
        self._url_image: dict[str, SlidingPercentile] = {}
        self._lock = threading.Lock()

    def estimate(self, options: RecognizeOptions, image: ImageInfo | None) -> Estimate:
        """The tokens to reserve for one call; ``image`` None: an http(s) URL."""
        key = task_key(options)
        with self._lock:
            output = self._high(self._output.get(key))
            text = self._high(self._text.get(key))
            url_image = self._high(self._url_image.get(options.model))
        if image is None:
            pixels = url_image or max_image_tokens(options.model, options.max_pixels)
        else:
            pixels = image_tokens(
                image.width, image.height, options.model, options.min_pixels, options.max_pixels
            )
        return Estimate(
            image_tokens=pixels,
            text_tokens=prompt_tokens(options) if text is None else text,
            output_tokens=min(
                INITIAL_OUTPUT_TOKENS if output is None else output,
                options.effective_max_tokens(),
            ),
        )

    def learn(self, options: RecognizeOptions, image: ImageInfo | None, usage: Usage) -> None:
        """Remember what a call really cost."""
        key = task_key(options)
        text = usage.text_tokens or max(0, usage.input_tokens - usage.image_tokens)
        with self._lock:
            self._series(self._output, key).add(usage.output_tokens)
            if usage.input_tokens:
                self._series(self._text, key).add(text)
            if image is None and usage.image_tokens:
                self._series(self._url_image, options.model).add(usage.image_tokens)

    def _high(self, series: SlidingPercentile | None) -> int | None:
        return None if series is None else series.high(self._percentile, self._min_calls)

    def _series(self, table: dict[_K, SlidingPercentile], key: _K) -> SlidingPercentile:
        series = table.get(key)
        if series is None:
            series = table[key] = SlidingPercentile(self._window)
        return series
