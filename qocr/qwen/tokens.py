"""Token estimates for a TPM throttle: the documented resize rule, a prompt guess, an output bound.

The resize rule ("smart_resize", from Alibaba's Qwen-OCR guide; the API reference gives the
units and bounds): keep the aspect ratio, round each side to a multiple of the model's unit
(32 px for -latest / -2025-11-20, 28 px for the rest), then scale down if the area is over
max_pixels or up if under min_pixels. Image tokens = area / unit² + 2. Checked against the
seed: a 689×487 image costs 332 image tokens on qwen-vl-ocr-latest (its streamed sample).
"""

from __future__ import annotations

import math

from qocr.qwen.catalog import model_spec
from qocr.qwen.options import RecognizeOptions
from qocr.qwen.tasks import DEFAULT_PROMPT, task_prompt

# Tokens around the prompt (chat template, role markers); a safe over-estimate.
TEMPLATE_TOKENS = 16
# One token per 3 UTF-8 bytes over-counts English (~4 chars a token) and matches CJK
# (3 bytes, ~1 token a character): an estimate for a throttle should err high.
BYTES_PER_TOKEN = 3


def pixel_bounds(
    model: str, min_pixels: int | None = None, max_pixels: int | None = None
) -> tuple[int, int]:
    """The [min, max] pixel range the server applies: defaults, the documented floor and cap."""
    spec = model_spec(model)
    low = max(min_pixels or spec.min_pixels, spec.min_pixels)
    high = min(max_pixels or spec.default_max_pixels, spec.max_pixels_cap)
    return min(low, high), high


def smart_resize(
    width: int, height: int, unit: int, min_pixels: int, max_pixels: int
) -> tuple[int, int]:
    """The (width, height) the model sees: sides multiples of ``unit``, area within bounds."""
    w_bar = max(unit, round(width / unit) * unit)
    h_bar = max(unit, round(height / unit) * unit)
    if w_bar * h_bar > max_pixels:
        beta = math.sqrt(width * height / max_pixels)
        w_bar = max(unit, math.floor(width / beta / unit) * unit)
        h_bar = max(unit, math.floor(height / beta / unit) * unit)
    elif w_bar * h_bar < min_pixels:
        beta = math.sqrt(min_pixels / (width * height))
        w_bar = math.ceil(width * beta / unit) * unit
        h_bar = math.ceil(height * beta / unit) * unit
    return w_bar, h_bar


def image_tokens(
    width: int,
    height: int,
    model: str,
    min_pixels: int | None = None,
    max_pixels: int | None = None,
) -> int:
    """Image tokens of a ``width`` × ``height`` image on ``model`` (≈ pixels / unit² + 2)."""
    unit = model_spec(model).pixel_unit
    low, high = pixel_bounds(model, min_pixels, max_pixels)
    w_bar, h_bar = smart_resize(width, height, unit, low, high)
    return (w_bar * h_bar) // (unit * unit) + 2


def max_image_tokens(model: str, max_pixels: int | None = None) -> int:
    """The most image tokens one image can cost (for URLs, whose size we do not know)."""
    unit = model_spec(model).pixel_unit
    return pixel_bounds(model, None, max_pixels)[1] // (unit * unit) + 2


def text_tokens(text: str) -> int:
    """A deliberately high estimate of the tokens of ``text``."""
    return math.ceil(len(text.encode("utf-8")) / BYTES_PER_TOKEN)


def prompt_tokens(options: RecognizeOptions) -> int:
    """Estimated text-input tokens: the prompt the model will read, plus the template."""
    if options.prompt is not None:
        prompt = options.prompt
    elif options.task is not None:
        prompt = task_prompt(options.task, options.result_schema)
    else:
        prompt = DEFAULT_PROMPT
    return text_tokens(prompt) + TEMPLATE_TOKENS


def estimate_request_tokens(
    width: int | None, height: int | None, options: RecognizeOptions
) -> int:
    """Tokens to reserve against TPM: image + prompt + the output bound (``max_tokens``).

    Unknown dimensions (an http(s) URL) count as the largest image the model accepts.
    """
    if width is None or height is None:
        image = max_image_tokens(options.model, options.max_pixels)
    else:
        image = image_tokens(width, height, options.model, options.min_pixels, options.max_pixels)
    return image + prompt_tokens(options) + options.effective_max_tokens()
