"""RecognizeOptions: every request option in one frozen, validated, JSON-safe value object.

The pipeline stores ``to_dict()`` on a batch and rebuilds the object with ``from_dict()``;
``fingerprint()`` keys a result cache (image hash + fingerprint). Ranges are the seed's,
per model where the seed gives them per model: ``min_pixels`` at least the model's minimum,
``max_pixels`` at most its cap, ``max_tokens`` at most its documented maximum (4,096 for
``qwen-vl-ocr`` and its dated snapshots) unless ``granted_max_tokens`` says the account
was granted more (Alibaba raises it to at most 8,192 on request).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, cast

from qocr.qwen.catalog import MAX_OUTPUT_TOKENS, ModelSpec, model_spec
from qocr.qwen.errors import OptionsError
from qocr.qwen.tasks import Task, check_task_supported

_SCHEMA_MAX_DEPTH = 3
# 2: the schema's key order and the API count (1 sorted the schema's keys).
_FINGERPRINT_VERSION = 2
# Options that cannot change the answer: how it travels, or what the account may ask for.
_NOT_IN_FINGERPRINT = frozenset({"stream", "granted_max_tokens"})

Stop = str | tuple[str, ...] | tuple[int, ...]


@dataclass(frozen=True)
class RecognizeOptions:
    """Everything a recognize call sends besides the image; None means the model's default."""

    model: str
    task: Task | None = None
    prompt: str | None = None
    result_schema: dict[str, Any] | None = None
    min_pixels: int | None = None
    max_pixels: int | None = None
    enable_rotate: bool | None = None
    max_tokens: int | None = None
    stream: bool = False
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    repetition_penalty: float | None = None
    presence_penalty: float | None = None
    seed: int | None = None
    stop: Stop | None = field(default=None)
    logprobs: bool | None = None
    top_logprobs: int | None = None
    # Not sent: the max_tokens ceiling this account was granted (None: the documented one).
    granted_max_tokens: int | None = None

    def __post_init__(self) -> None:
        if isinstance(self.stop, list):
            object.__setattr__(self, "stop", tuple(self.stop))
        if self.result_schema is not None:
            object.__setattr__(self, "result_schema", _copy_schema(self.result_schema))
        _validate(self)

    def __hash__(self) -> int:
        # Sorted keys: equal options (a schema's dict equality ignores order) hash equal.
        return hash(_compact(self.to_dict(), sort_keys=True))

    def to_dict(self) -> dict[str, Any]:
        """The options as a JSON-safe dict (unset options left out)."""
        data = {key: value for key, value in asdict(self).items() if value is not None}
        if isinstance(self.stop, tuple):
            data["stop"] = list(self.stop)
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RecognizeOptions:
        """Rebuild from :meth:`to_dict` output; unknown keys are an :class:`OptionsError`."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise OptionsError(f"unknown options: {', '.join(unknown)}")
        if "model" not in data:
            raise OptionsError("options need a model")
        return cls(**data)

    def fingerprint(self, api: str | None = None) -> str:
        """sha256 hex of the canonical JSON of what changes the answer: every option but how
        the answer travels, and ``api`` when given (the native API takes a task as a
        parameter and answers with its own fields; the compatible one gets a prompt).

        The schema keeps its key order (the model answers in it); other keys are sorted.
        """
        data = {k: v for k, v in self.to_dict().items() if k not in _NOT_IN_FINGERPRINT}
        if self.result_schema is not None:
            data["result_schema"] = _compact(self.result_schema, sort_keys=False)
        if api is not None:
            data["api"] = api
        data["v"] = _FINGERPRINT_VERSION
        return hashlib.sha256(_compact(data, sort_keys=True).encode("utf-8")).hexdigest()

    def effective_max_tokens(self) -> int:
        """The output bound of this request: ``max_tokens`` or the model's default."""
        return self.max_tokens or model_spec(self.model).default_max_tokens


def _compact(value: Any, sort_keys: bool) -> str:
    return json.dumps(value, sort_keys=sort_keys, separators=(",", ":"), ensure_ascii=False)


def _copy_schema(schema: Any) -> dict[str, Any]:
    # A deep copy through JSON: proves it is JSON-safe and cuts aliasing to the caller's dict.
    if not isinstance(schema, dict):
        raise OptionsError("result_schema must be a JSON object (a dict)")
    try:
        return cast(dict[str, Any], json.loads(json.dumps(schema)))
    except (TypeError, ValueError) as exc:
        raise OptionsError(f"result_schema is not JSON-serialisable: {exc}") from None


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return max((_depth(v) for v in value), default=0)
    return 0


def _check_type(name: str, value: Any, kind: type | tuple[type, ...]) -> None:
    # bool is an int in Python; a flag where a number belongs (or the reverse) is a bug.
    wrong_bool = isinstance(value, bool) and kind not in (bool, (bool,))
    if value is not None and (wrong_bool or not isinstance(value, kind)):
        raise OptionsError(f"{name} has the wrong type: {type(value).__name__}")


def _check_range(name: str, value: float | None, low: float, high: float, rule: str) -> None:
    if value is None:
        return
    ok = {
        "[]": low <= value <= high,
        "[)": low <= value < high,
        "(]": low < value <= high,
    }[rule]
    if not ok:
        raise OptionsError(f"{name}={value} is out of range {rule[0]}{low}, {high}{rule[1]}")


def _validate(o: RecognizeOptions) -> None:
    if not isinstance(o.model, str) or not o.model:
        raise OptionsError("model must be a non-empty string")
    for name in ("prompt",):
        _check_type(name, getattr(o, name), str)
    for name in ("enable_rotate", "logprobs"):
        _check_type(name, getattr(o, name), bool)
    _check_type("stream", o.stream, bool)
    for name in (
        "min_pixels",
        "max_pixels",
        "max_tokens",
        "top_k",
        "seed",
        "top_logprobs",
        "granted_max_tokens",
    ):
        _check_type(name, getattr(o, name), int)
    for name in ("temperature", "top_p", "repetition_penalty", "presence_penalty"):
        _check_type(name, getattr(o, name), (int, float))
    spec = model_spec(o.model)
    if o.task is not None:
        check_task_supported(o.model, o.task)
        if o.prompt is not None:
            # Native calls with a task carry no text part; a prompt would be silently dropped.
            raise OptionsError("task and prompt are exclusive: a built-in task has its own prompt")
    if o.result_schema is not None:
        if o.task != "key_information_extraction":
            raise OptionsError("result_schema needs task='key_information_extraction'")
        if _depth(o.result_schema) > _SCHEMA_MAX_DEPTH:
            raise OptionsError(f"result_schema nests deeper than {_SCHEMA_MAX_DEPTH} levels")
    _validate_pixels(o, spec)
    _check_range("granted_max_tokens", o.granted_max_tokens, 1, MAX_OUTPUT_TOKENS, "[]")
    _check_range("max_tokens", o.max_tokens, 1, MAX_OUTPUT_TOKENS, "[]")
    _check_max_tokens_ceiling(o, spec)
    if o.temperature is not None and o.top_p is not None:
        raise OptionsError("set temperature or top_p, not both (the API takes only one)")
    _check_range("temperature", o.temperature, 0, 2, "[)")
    _check_range("top_p", o.top_p, 0, 1, "(]")
    _check_range("top_k", o.top_k, 0, float("inf"), "[]")
    _check_range("presence_penalty", o.presence_penalty, -2, 2, "[]")
    _check_range("repetition_penalty", o.repetition_penalty, 0, float("inf"), "(]")
    _check_range("seed", o.seed, 0, 2**31 - 1, "[]")
    _check_range("top_logprobs", o.top_logprobs, 0, 5, "[]")
    if o.logprobs and not spec.logprobs:
        raise OptionsError(f"model {o.model} does not return logprobs", code="logprobs_unsupported")
    _validate_stop(o.stop)


def max_tokens_ceiling(model: str, granted_max_tokens: int | None = None) -> int:
    """The largest ``max_tokens`` ``model`` accepts: documented, or granted to the account."""
    documented = model_spec(model).default_max_tokens
    return min(max(documented, granted_max_tokens or 0), MAX_OUTPUT_TOKENS)


def _check_max_tokens_ceiling(o: RecognizeOptions, spec: ModelSpec) -> None:
    ceiling = max_tokens_ceiling(o.model, o.granted_max_tokens)
    if o.max_tokens is None or o.max_tokens <= ceiling:
        return
    raise OptionsError(
        f"max_tokens={o.max_tokens} is over {o.model}'s maximum of {ceiling} "
        f"(the service answers 400); if Alibaba granted your account more, set "
        f"granted_max_tokens (QOCR_GRANTED_MAX_TOKENS), at most {MAX_OUTPUT_TOKENS}",
        code="max_tokens_over_limit",
    )


def _validate_pixels(o: RecognizeOptions, spec: ModelSpec) -> None:
    for name in ("min_pixels", "max_pixels"):
        value = getattr(o, name)
        if value is not None and value <= 0:
            raise OptionsError(f"{name} must be positive")
    # Unknown models: the server decides (see model_spec).
    if o.max_pixels is not None and spec.known and o.max_pixels > spec.max_pixels_cap:
        raise OptionsError(
            f"max_pixels={o.max_pixels} is over {o.model}'s cap of {spec.max_pixels_cap}"
        )
    if o.min_pixels is not None and spec.known and o.min_pixels < spec.min_pixels:
        raise OptionsError(
            f"min_pixels={o.min_pixels} is under {o.model}'s minimum of {spec.min_pixels} "
            f"({spec.min_pixels // spec.pixel_unit**2}×{spec.pixel_unit}×{spec.pixel_unit})"
        )
    if o.min_pixels is not None and o.max_pixels is not None and o.min_pixels > o.max_pixels:
        raise OptionsError("min_pixels is larger than max_pixels")


def _validate_stop(stop: Stop | None) -> None:
    if stop is None or isinstance(stop, str):
        return
    if not isinstance(stop, tuple) or not stop:
        raise OptionsError("stop must be a string or a non-empty list")
    all_str = all(isinstance(s, str) for s in stop)
    all_int = all(isinstance(s, int) and not isinstance(s, bool) for s in stop)
    if not (all_str or all_int):
        raise OptionsError("stop must not mix strings and token ids")
