"""Model table, prices, endpoints, and token estimates for both model families."""

from __future__ import annotations

import pytest

from qocr.qwen import RecognizeOptions, estimate_request_tokens, image_tokens, model_spec, price
from qocr.qwen.catalog import BASE_URLS, MODELS, Api, Region, endpoint
from qocr.qwen.tasks import DEFAULT_PROMPT
from qocr.qwen.tokens import (
    TEMPLATE_TOKENS,
    max_image_tokens,
    pixel_bounds,
    smart_resize,
    text_tokens,
)


@pytest.mark.parametrize(
    ("model", "unit", "min_px", "max_px", "cap", "max_tokens", "rpm", "tasks"),
    [
        ("qwen-vl-ocr", 28, 3136, 6422528, 23520000, 4096, 600, True),
        ("qwen-vl-ocr-latest", 32, 3072, 8388608, 30720000, 8192, 1200, True),
        ("qwen-vl-ocr-2025-11-20", 32, 3072, 8388608, 30720000, 8192, 1200, True),
        ("qwen-vl-ocr-2025-08-28", 28, 3136, 6422528, 23520000, 4096, 600, True),
        ("qwen-vl-ocr-2025-04-13", 28, 3136, 6422528, 23520000, 4096, 600, True),
        ("qwen-vl-ocr-2024-10-28", 28, 3136, 6422528, 23520000, 4096, 600, False),
    ],
)
def test_model_table_matches_the_seed(
    model: str,
    unit: int,
    min_px: int,
    max_px: int,
    cap: int,
    max_tokens: int,
    rpm: int,
    tasks: bool,
) -> None:
    spec = model_spec(model)
    assert (spec.pixel_unit, spec.min_pixels, spec.default_max_pixels, spec.max_pixels_cap) == (
        unit,
        min_px,
        max_px,
        cap,
    )
    assert (spec.default_max_tokens, spec.rpm, spec.tpm, spec.builtin_tasks) == (
        max_tokens,
        rpm,
        6_000_000,
        tasks,
    )
    assert spec.known


def test_unknown_model_falls_back_conservatively() -> None:
    spec = model_spec("qwen-vl-ocr-2027-01-01")
    assert not spec.known
    assert spec.name == "qwen-vl-ocr-2027-01-01"
    assert (spec.pixel_unit, spec.default_max_tokens, spec.rpm) == (28, 8192, 600)


@pytest.mark.parametrize(
    ("model", "region", "expected"),
    [
        ("qwen-vl-ocr-latest", "intl", (0.07, 0.16)),
        ("qwen-vl-ocr-2025-11-20", "us", (0.043, 0.072)),
        ("qwen-vl-ocr", "cn", (0.043, 0.072)),
        ("qwen-vl-ocr-2025-08-28", "cn", (0.717, 0.717)),
        ("qwen-vl-ocr-2024-10-28", "cn", (0.717, 0.717)),
        ("some-future-model", "cn", (0.717, 0.717)),  # the region's highest
        ("some-future-model", "intl", (0.07, 0.16)),
    ],
)
def test_price(model: str, region: Region, expected: tuple[float, float]) -> None:
    assert price(model, region) == expected


@pytest.mark.parametrize(
    ("base", "api", "url"),
    [
        (
            BASE_URLS["intl"],
            "compatible",
            "https://dashscope-intl.aliyuncs.com/compatible-mode/v1/chat/completions",
        ),
        (
            BASE_URLS["us"],
            "dashscope",
            "https://dashscope-us.aliyuncs.com/api/v1/services/aigc/multimodal-generation/generation",
        ),
        (
            BASE_URLS["cn"],
            "compatible",
            "https://dashscope.aliyuncs.com/compatible-mode/v1/chat/completions",
        ),
        (
            "http://127.0.0.1:8080/",
            "compatible",
            "http://127.0.0.1:8080/compatible-mode/v1/chat/completions",
        ),
        (
            "http://emu:9/compatible-mode/v1",  # an SDK-style base URL is cut back to its root
            "dashscope",
            "http://emu:9/api/v1/services/aigc/multimodal-generation/generation",
        ),
    ],
)
def test_endpoints(base: str, api: Api, url: str) -> None:
    assert endpoint(base, api) == url


@pytest.mark.parametrize(
    ("width", "height", "model", "expected"),
    [
        # The seed's streamed sample: the 689×487 ticket costs 332 image tokens on -latest.
        (689, 487, "qwen-vl-ocr-latest", 332),
        # The same image on the 28 px family: 700×476 / 784 + 2 (the guide's older sample).
        (689, 487, "qwen-vl-ocr-2025-08-28", 427),
        (689, 487, "qwen-vl-ocr", 427),
        # Tiny images are scaled up to min_pixels: 64×64 / 1024 + 2, 56×56 / 784 + 2.
        (11, 11, "qwen-vl-ocr-latest", 6),
        (11, 11, "qwen-vl-ocr", 6),
        # Scaled down under the default max_pixels: 3328×2496 / 1024 + 2 and
        # 2912×2184 / 784 + 2 (β = √(area / max), sides floored to the unit).
        (4000, 3000, "qwen-vl-ocr-latest", 8114),
        (4000, 3000, "qwen-vl-ocr", 8114),
    ],
)
def test_image_tokens(width: int, height: int, model: str, expected: int) -> None:
    assert image_tokens(width, height, model) == expected


def test_smart_resize_keeps_sides_multiples_and_area_in_bounds() -> None:
    w, h = smart_resize(4000, 3000, 32, 3072, 8388608)
    assert (w % 32, h % 32) == (0, 0)
    assert w * h <= 8388608
    assert (w, h) == (3328, 2496)
    assert smart_resize(689, 487, 32, 3072, 8388608) == (704, 480)
    assert smart_resize(11, 11, 28, 3136, 6422528) == (56, 56)


def test_max_pixels_lowers_the_cost_and_the_cap_bounds_it() -> None:
    assert image_tokens(4000, 3000, "qwen-vl-ocr-latest", max_pixels=1024 * 1024) <= 1026
    assert pixel_bounds("qwen-vl-ocr-latest", max_pixels=10**9) == (3072, 30720000)
    assert pixel_bounds("qwen-vl-ocr", min_pixels=1) == (3136, 6422528)
    assert max_image_tokens("qwen-vl-ocr-latest") == 8194
    assert max_image_tokens("qwen-vl-ocr") == 8194


def test_estimate_request_tokens_adds_prompt_and_output_bound() -> None:
    options = RecognizeOptions(model="qwen-vl-ocr-latest")
    prompt = text_tokens(DEFAULT_PROMPT) + TEMPLATE_TOKENS
    assert estimate_request_tokens(689, 487, options) == 332 + prompt + 8192
    capped = RecognizeOptions(model="qwen-vl-ocr", max_tokens=1000, prompt="x" * 300)
    assert estimate_request_tokens(689, 487, capped) == 427 + 100 + TEMPLATE_TOKENS + 1000
    # Unknown size (an http URL): the largest image the model accepts.
    assert estimate_request_tokens(None, None, options) == 8194 + prompt + 8192


def test_kie_schema_counts_in_the_prompt_estimate() -> None:
    plain = RecognizeOptions(model="qwen-vl-ocr-latest", task="key_information_extraction")
    schema = RecognizeOptions(
        model="qwen-vl-ocr-latest",
        task="key_information_extraction",
        result_schema={"invoice_number": "x" * 300},
    )
    assert estimate_request_tokens(100, 100, schema) > estimate_request_tokens(100, 100, plain)


def test_every_model_has_a_price_in_every_region() -> None:
    for region in ("intl", "us", "cn"):
        for name in MODELS:
            assert all(p > 0 for p in price(name, region))
