"""One OCR call as both APIs describe it, and the parameter checks they share.

:mod:`qocr.emulator.parse_compatible` and :mod:`qocr.emulator.parse_native` turn a request
body into an :class:`OcrCall` or raise :class:`~qocr.emulator.errors.ApiError` with the real
service's words; everything after parsing is API-agnostic.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from qocr.emulator import errors
from qocr.qwen.catalog import MODELS, ModelSpec

ApiName = Literal["compatible", "native"]

MAX_SCHEMA_DEPTH = 3
SEED_MAX = 2**31 - 1  # the seed: [0, 2^31 - 1] for both APIs


@dataclass(frozen=True)
class ImageRef:
    """An image part: its URL (http(s) or data URL), its resize bounds and rotation flag."""

    url: str
    min_pixels: int | None = None
    max_pixels: int | None = None
    enable_rotate: bool = False


@dataclass(frozen=True)
class OcrCall:
    """What to do, whichever API asked."""

    api: ApiName
    model: ModelSpec
    images: tuple[ImageRef, ...]  # may be empty: a text-only call
    prompt: str | None  # the user's text; None when absent (the default prompt applies)
    task: str | None = None  # a built-in task (native API only)
    result_schema: Mapping[str, Any] | None = None
    max_tokens: int = 4096
    stream: bool = False
    include_usage: bool = False  # compatible: stream_options.include_usage
    incremental_output: bool = False  # native streaming: deltas instead of cumulative text
    stops: tuple[str, ...] = ()
    logprobs: bool = False
    top_logprobs: int = 0


def require_model(value: object) -> ModelSpec:
    """The documented model named ``value``; 400 when absent, 404 when unknown."""
    if value is None or value == "":
        raise errors.missing_model()
    if not isinstance(value, str):
        raise errors.invalid_parameter("Input should be a valid string: model")
    spec = MODELS.get(value)
    if spec is None:
        raise errors.model_not_found(value)
    return spec


def type_error(kind: str, location: str) -> errors.ApiError:
    return errors.invalid_parameter(f"Input should be a valid {kind}: {location}")


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    return (isinstance(value, int | float) and not isinstance(value, bool)) and math.isfinite(value)


def optional_bool(params: Mapping[str, Any], name: str, location: str) -> bool | None:
    value = params.get(name)
    if value is None:
        return None
    if not isinstance(value, bool):
        raise type_error("boolean", location)
    return value


def optional_pixels(item: Mapping[str, Any], name: str, location: str) -> int | None:
    value = item.get(name)
    if value is None:
        return None
    if not is_int(value) or value <= 0:
        raise type_error("positive integer", location)
    return int(value)


def check_sampling(params: Mapping[str, Any], prefix: str) -> None:
    """temperature, top_p, top_k, penalties, top_logprobs: types and documented ranges."""
    for name in ("temperature", "top_p", "repetition_penalty", "presence_penalty"):
        value = params.get(name)
        if value is not None and not is_number(value):
            raise errors.invalid_parameter(f"'{name}' must be Float")
    temperature = params.get("temperature")
    if temperature is not None and not 0.0 <= temperature < 2.0:
        raise errors.invalid_parameter("Temperature should be in [0.0, 2.0)")
    top_p = params.get("top_p")
    if top_p is not None and not 0.0 < top_p <= 1.0:
        raise errors.invalid_parameter("Range of top_p should be (0.0, 1.0]")
    top_k = params.get("top_k")
    if top_k is not None and (not is_int(top_k) or top_k < 0):
        raise errors.invalid_parameter("Parameter top_k be greater than or equal to 0")
    penalty = params.get("repetition_penalty")
    if penalty is not None and penalty <= 0:
        raise errors.invalid_parameter("Repetition_penalty should be greater than 0.0")
    presence = params.get("presence_penalty")
    if presence is not None and not -2.0 <= presence <= 2.0:
        raise errors.invalid_parameter("Presence_penalty should be in [-2.0, 2.0]")
    top_logprobs = params.get("top_logprobs")
    if top_logprobs is not None and (not is_int(top_logprobs) or not 0 <= top_logprobs <= 5):
        raise errors.invalid_parameter("Range of top_logprobs should be [0, 5]")


def logprobs_request(params: Mapping[str, Any], spec: ModelSpec, prefix: str) -> tuple[bool, int]:
    """(logprobs, top_logprobs) asked for; models before qwen-vl-ocr-2025-04-13 have none."""
    wanted = bool(optional_bool(params, "logprobs", f"{prefix}logprobs"))
    if wanted and not spec.logprobs:
        raise errors.invalid_parameter(f"The model {spec.name} does not support logprobs.")
    top = params.get("top_logprobs")  # checked by check_sampling
    return wanted, top if wanted and isinstance(top, int) else 0


def check_pixel_bounds(images: list[ImageRef], spec: ModelSpec) -> None:
    """``min_pixels`` at least the model's minimum, ``max_pixels`` at most its cap."""
    for image in images:
        if image.min_pixels is not None and image.min_pixels < spec.min_pixels:
            raise errors.invalid_parameter(
                f"The min_pixels of the model {spec.name} must be at least {spec.min_pixels}, "
                f"got {image.min_pixels}."
            )
        if image.max_pixels is not None and image.max_pixels > spec.max_pixels_cap:
            raise errors.invalid_parameter(
                f"The max_pixels of the model {spec.name} must be at most "
                f"{spec.max_pixels_cap}, got {image.max_pixels}."
            )


def max_tokens(params: Mapping[str, Any], spec: ModelSpec) -> int:
    """``max_tokens`` within [1, the model's maximum]; the maximum when absent."""
    value = params.get("max_tokens")
    if value is None:
        return spec.default_max_tokens
    if not is_int(value) or not 1 <= value <= spec.default_max_tokens:
        raise errors.invalid_parameter(
            f"Range of max_tokens should be [1, {spec.default_max_tokens}]"
        )
    return int(value)


def stop_sequences(params: Mapping[str, Any]) -> tuple[str, ...]:
    """``stop`` as strings; token-id stops are accepted and ignored (no token ids here)."""
    value = params.get("stop")
    if value is None:
        return ()
    if isinstance(value, str):
        return (value,)
    if isinstance(value, list):
        if all(isinstance(v, str) for v in value):
            return tuple(value)
        if all(is_int(v) for v in value) or all(
            isinstance(v, list) and all(is_int(x) for x in v) for v in value
        ):
            return ()
    raise errors.invalid_parameter(
        'The "stop" parameter must be of type "str", "list[str]", "list[int]", or '
        '"list[list[int]]", and all elements within the list must be of the same type.'
    )


def check_seed(params: Mapping[str, Any], api: ApiName) -> None:
    value = params.get("seed")
    if value is None:
        return
    if api == "native":
        if not is_int(value) or not 0 <= value <= SEED_MAX:
            raise errors.invalid_parameter(f"Range of seed should be [0, {SEED_MAX}]")
        return
    if not is_int(value):
        raise errors.invalid_value("'seed' must be Integer")
    if value < 0:
        raise errors.invalid_value(f"{value} is lesser than the minimum of 0 - 'seed'")
    if value > SEED_MAX:
        raise errors.invalid_value(f"{value} is greater than the maximum of {SEED_MAX} - 'seed'")


def schema_depth(schema: Mapping[str, Any]) -> int:
    """Levels of nesting of a ``result_schema`` (a flat object is 1)."""
    nested = [schema_depth(v) for v in schema.values() if isinstance(v, Mapping)]
    return 1 + max(nested, default=0)


def require_user_message(messages: list[Any]) -> None:
    if not any(isinstance(m, Mapping) and m.get("role") == "user" for m in messages):
        raise errors.invalid_parameter(
            "The input messages do not contain elements with the role of user."
        )


def require_messages(value: object, location: str) -> list[Mapping[str, Any]]:
    """A non-empty list of message objects, each with a role and a content."""
    if value is None:
        raise errors.missing_parameter(location)
    if not isinstance(value, list):
        raise type_error("list", location)
    if not value:
        raise errors.invalid_parameter("[] is too short")
    for message in value:
        if not isinstance(message, Mapping):
            raise errors.invalid_parameter(
                "Input should be a valid dictionary or instance of GPT3Message"
            )
        if message.get("role") not in ("system", "user", "assistant"):
            raise errors.invalid_parameter(
                f"Input should be 'system', 'user' or 'assistant': {location}.role"
            )
        if message.get("content") is None:
            raise errors.invalid_parameter("The content field is a required field.")
    require_user_message(value)
    return value


def require_input(images: list[ImageRef], texts: list[str]) -> tuple[ImageRef, ...]:
    """The images of a call that has something to read: images, or (text-only) some text."""
    if not images and not any(texts):
        raise errors.invalid_parameter("The input messages do not contain any text or image.")
    return tuple(images)
