"""Token estimates for the TPM throttle: exact image tokens, learned text and a high output
percentile, one table per rule."""

from __future__ import annotations

import pytest

from qocr.qwen.images import ImageInfo
from qocr.qwen.options import RecognizeOptions
from qocr.qwen.result import Usage
from qocr.qwen.tokens import max_image_tokens, prompt_tokens
from qocr.worker.estimates import (
    INITIAL_OUTPUT_TOKENS,
    Estimate,
    SlidingPercentile,
    TokenEstimator,
    task_key,
)

LATEST = "qwen-vl-ocr-latest"


def png(width: int, height: int) -> ImageInfo:
    return ImageInfo(mime="image/png", width=width, height=height, size_bytes=1000)


def usage(output: int, *, image: int = 777, text: int = 30) -> Usage:
    return Usage(
        input_tokens=image + text,
        output_tokens=output,
        image_tokens=image,
        text_tokens=text,
        total_tokens=image + text + output,
    )


@pytest.mark.parametrize(
    ("values", "share", "expected"),
    [
        ([], 0.9, None),
        ([7], 0.9, 7),
        (list(range(1, 11)), 0.9, 9),
        (list(range(1, 11)), 0.5, 5),
        (list(range(1, 11)), 1.0, 10),
        (list(range(10, 0, -1)), 0.9, 9),  # arrival order does not matter
        ([5, 5, 5, 100], 0.9, 100),  # nearest rank: ceil(0.9 * 4) = 4th
    ],
    ids=["empty", "one", "p90 of ten", "median", "max", "reversed", "nearest rank"],
)
def test_percentile_nearest_rank(values: list[int], share: float, expected: int | None) -> None:
    series = SlidingPercentile(100)
    for value in values:
        series.add(value)
    assert series.percentile(share) == expected


def test_the_window_forgets_the_oldest_values() -> None:
    series = SlidingPercentile(3)
    for value in (1000, 1, 2, 3):
        series.add(value)
    assert len(series) == 3
    assert series.percentile(1.0) == 3  # 1000 left the window


@pytest.mark.parametrize(
    ("values", "expected"),
    [([], None), ([3, 9, 4], 9), (list(range(1, 21)), 18)],
    ids=["none yet", "fewer than min: the largest", "enough: the percentile"],
)
def test_high_is_the_largest_value_until_enough_are_in(
    values: list[int], expected: int | None
) -> None:
    series = SlidingPercentile(100)
    for value in values:
        series.add(value)
    assert series.high(0.9, min_count=10) == expected


@pytest.mark.parametrize(
    ("model", "size", "bounds", "image_tokens"),
    [
        (LATEST, (800, 1000), (None, None), 777),  # 800 x 992 px of 32 x 32, + 2
        (LATEST, (689, 487), (None, None), 332),  # the seed's streamed sample
        ("qwen-vl-ocr", (800, 1000), (None, None), 1046),  # 28 x 28 px tokens
        (LATEST, (4000, 3000), (None, 30_720_000), 11_752),  # max_pixels raised: no downscale
        (LATEST, (4000, 3000), (None, None), 8_114),  # scaled down under the default max_pixels
    ],
    ids=["latest", "seed sample", "28-px model", "high max_pixels", "default max_pixels"],
)
def test_image_tokens_are_exact_from_the_size(
    model: str, size: tuple[int, int], bounds: tuple[int | None, int | None], image_tokens: int
) -> None:
    options = RecognizeOptions(model=model, min_pixels=bounds[0], max_pixels=bounds[1])
    estimate = TokenEstimator().estimate(options, png(*size))
    assert estimate.image_tokens == image_tokens


@pytest.mark.parametrize(
    ("options", "output"),
    [
        (RecognizeOptions(model=LATEST), INITIAL_OUTPUT_TOKENS),
        (RecognizeOptions(model=LATEST, max_tokens=100), 100),  # never above max_tokens
    ],
    ids=["default", "max_tokens binds"],
)
def test_before_any_call_the_guesses_stand(options: RecognizeOptions, output: int) -> None:
    estimate = TokenEstimator().estimate(options, png(800, 1000))
    assert estimate == Estimate(777, prompt_tokens(options), output)
    assert estimate.total == 777 + prompt_tokens(options) + output


@pytest.mark.parametrize(
    ("outputs", "expected"),
    [
        ([1200], 1200),  # one call seen: what it cost
        ([300, 2000, 900], 2000),  # a few: the largest
        (list(range(1000, 2000, 50)), 1850),  # 20 calls: p90 (18th of 20), not the mean 1475
        ([500] * 200 + [3000] * 200, 3000),  # the window: the newest 200 calls
        ([9000] * 20, 8192),  # never above the model's max_tokens
    ],
    ids=["one", "few", "p90", "sliding window", "capped"],
)
def test_output_is_a_high_percentile_of_what_calls_returned(
    outputs: list[int], expected: int
) -> None:
    estimator = TokenEstimator()
    options = RecognizeOptions(model=LATEST)
    for output in outputs:
        estimator.learn(options, png(800, 1000), usage(output))
    assert estimator.estimate(options, png(800, 1000)).output_tokens == expected


def test_input_text_is_what_the_service_counted_once_seen() -> None:
    estimator = TokenEstimator()
    options = RecognizeOptions(model=LATEST)
    assert estimator.estimate(options, png(800, 1000)).text_tokens == prompt_tokens(options)
    estimator.learn(options, png(800, 1000), usage(100, text=21))
    assert estimator.estimate(options, png(800, 1000)).text_tokens == 21
    # An answer without text_tokens: input minus image tokens.
    bare = Usage(input_tokens=800, output_tokens=5, image_tokens=777, total_tokens=805)
    estimator.learn(options, png(800, 1000), bare)
    assert estimator.estimate(options, png(800, 1000)).text_tokens == 23


def test_url_images_cost_the_largest_image_until_answers_show_their_size() -> None:
    estimator = TokenEstimator()
    options = RecognizeOptions(model=LATEST)
    assert estimator.estimate(options, None).image_tokens == max_image_tokens(LATEST)
    for tokens in (600, 700, 800):
        estimator.learn(options, None, usage(100, image=tokens))
    assert estimator.estimate(options, None).image_tokens == 800
    # Local images are never learned from: their size is known.
    estimator.learn(options, png(5000, 5000), usage(100, image=8194))
    assert estimator.estimate(options, None).image_tokens == 800


def test_models_and_tasks_learn_apart() -> None:
    estimator = TokenEstimator()
    text = RecognizeOptions(model=LATEST)
    table = RecognizeOptions(model=LATEST, task="table_parsing")
    other_model = RecognizeOptions(model="qwen-vl-ocr")
    estimator.learn(table, png(800, 1000), usage(3000))
    assert estimator.estimate(table, png(800, 1000)).output_tokens == 3000
    assert estimator.estimate(text, png(800, 1000)).output_tokens == INITIAL_OUTPUT_TOKENS
    assert estimator.estimate(other_model, png(800, 1000)).output_tokens == INITIAL_OUTPUT_TOKENS
    assert task_key(table) == (LATEST, "table_parsing")
    assert task_key(text) == (LATEST, "")
