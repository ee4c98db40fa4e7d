"""What Alibaba documents about each Qwen-OCR model, region and price (as of Jan 2026).

Sources: the API reference seed (pixel units, min/max pixels, max_tokens, built-in tasks,
logprobs) and our digest (RPM, TPM, prices, hosts). Where they disagree the seed wins:
``qwen-vl-ocr`` uses 28×28 px tokens there.

Unknown models: :func:`model_spec` answers with the rules of ``qwen-vl-ocr`` (28 px unit and
its pixel defaults, which give the larger token estimate for a mid-size image), the largest
documented output (8,192 tokens), the lowest documented RPM (600), and built-in tasks
allowed (the server decides); ``known`` is False. :func:`price` answers with the highest
documented price of the region, so a budget is never under-estimated.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal, get_args

Region = Literal["intl", "us", "cn"]
Api = Literal["compatible", "dashscope"]

REGIONS: tuple[Region, ...] = get_args(Region)
APIS: tuple[Api, ...] = get_args(Api)

# One root per region serves both APIs; a custom base_url (the emulator) mirrors this.
BASE_URLS: dict[Region, str] = {
    "intl": "https://dashscope-intl.aliyuncs.com",
    "us": "https://dashscope-us.aliyuncs.com",
    "cn": "https://dashscope.aliyuncs.com",
}
COMPATIBLE_PATH = "/compatible-mode/v1/chat/completions"
NATIVE_PATH = "/api/v1/services/aigc/multimodal-generation/generation"

TPM = 6_000_000  # tokens per minute, input + output, per account and model
MAX_OUTPUT_TOKENS = 8_192  # the largest max_tokens any model accepts (others: by request)


@dataclass(frozen=True)
class ModelSpec:
    """One model's documented limits and defaults."""

    name: str
    pixel_unit: int  # side of the square of pixels one image token covers
    min_pixels: int  # default and minimum
    default_max_pixels: int
    max_pixels_cap: int
    default_max_tokens: int  # also the documented maximum without a raised quota
    rpm: int
    tpm: int = TPM
    builtin_tasks: bool = True
    logprobs: bool = True
    known: bool = True


def _new(name: str, rpm: int) -> ModelSpec:
    # qwen-vl-ocr-latest and -2025-11-20: 32×32 px per token (Qwen3-VL based).
    return ModelSpec(
        name=name,
        pixel_unit=32,
        min_pixels=3 * 32 * 32,
        default_max_pixels=8192 * 32 * 32,
        max_pixels_cap=30000 * 32 * 32,
        default_max_tokens=8192,
        rpm=rpm,
    )


def _old(name: str, *, builtin_tasks: bool = True, logprobs: bool = True) -> ModelSpec:
    # qwen-vl-ocr, -2025-08-28 and earlier: 28×28 px per token.
    return ModelSpec(
        name=name,
        pixel_unit=28,
        min_pixels=4 * 28 * 28,
        default_max_pixels=8192 * 28 * 28,
        max_pixels_cap=30000 * 28 * 28,
        default_max_tokens=4096,
        rpm=600,
        builtin_tasks=builtin_tasks,
        logprobs=logprobs,
    )


MODELS: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        _old("qwen-vl-ocr"),
        _new("qwen-vl-ocr-latest", rpm=1200),
        _new("qwen-vl-ocr-2025-11-20", rpm=1200),
        _old("qwen-vl-ocr-2025-08-28"),
        _old("qwen-vl-ocr-2025-04-13"),
        # The seed gives this snapshot's max_tokens as "the model's maximum output", which it
        # does not state; 4,096 is the figure of its generation. No tasks, no logprobs.
        _old("qwen-vl-ocr-2024-10-28", builtin_tasks=False, logprobs=False),
    )
}

_SNAPSHOTS_BEFORE_1120 = (
    "qwen-vl-ocr-2025-08-28",
    "qwen-vl-ocr-2025-04-13",
    "qwen-vl-ocr-2024-10-28",
)

# USD per million tokens (input, output), Jan 2026. Singapore has a 1 M + 1 M free quota for
# 90 days, not reflected here. Check the date: prices change.
PRICES: dict[Region, dict[str, tuple[float, float]]] = {
    "intl": {name: (0.07, 0.16) for name in MODELS},
    "us": {name: (0.043, 0.072) for name in MODELS},
    "cn": {
        name: (0.717, 0.717) if name in _SNAPSHOTS_BEFORE_1120 else (0.043, 0.072)
        for name in MODELS
    },
}


def model_spec(model: str) -> ModelSpec:
    """The documented spec of ``model``; unknown names get the conservative fallback."""
    spec = MODELS.get(model)
    if spec is not None:
        return spec
    return replace(
        MODELS["qwen-vl-ocr"],
        name=model,
        default_max_tokens=MAX_OUTPUT_TOKENS,
        rpm=min(s.rpm for s in MODELS.values()),
        known=False,
    )


def price(model: str, region: Region) -> tuple[float, float]:
    """USD per million (input, output) tokens; unknown models get the region's highest."""
    table = PRICES[region]
    if model in table:
        return table[model]
    return (max(p[0] for p in table.values()), max(p[1] for p in table.values()))


def root_url(base_url: str) -> str:
    """The root of ``base_url``; SDK-style URLs ending in an API prefix are cut back to it."""
    root = base_url.rstrip("/")
    for suffix in ("/compatible-mode/v1", "/api/v1"):
        root = root.removesuffix(suffix)
    return root


def endpoint(base_url: str, api: Api) -> str:
    """The full URL of ``api`` under a root ``base_url`` (a region's host or the emulator)."""
    return root_url(base_url) + (COMPATIBLE_PATH if api == "compatible" else NATIVE_PATH)
