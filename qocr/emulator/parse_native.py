"""``POST /api/v1/services/aigc/multimodal-generation/generation`` body → :class:`OcrCall`.

Content items: ``{"image": url, "min_pixels", "max_pixels", "enable_rotate"}`` and
``{"text": "..."}`` (the seed's streaming example also sends ``"type": "text"``, accepted).
A content that is a plain string is a text-only call, which the reference allows.
Built-in tasks come in ``parameters.ocr_options``; with a task, the user's text is ignored
and the task's own prompt applies. Streaming is the ``X-DashScope-SSE: enable`` header.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qocr.emulator import errors
from qocr.emulator.calls import (
    MAX_SCHEMA_DEPTH,
    ImageRef,
    OcrCall,
    check_pixel_bounds,
    check_sampling,
    check_seed,
    logprobs_request,
    max_tokens,
    optional_bool,
    optional_pixels,
    require_input,
    require_messages,
    require_model,
    schema_depth,
    stop_sequences,
    type_error,
)
from qocr.qwen.catalog import ModelSpec
from qocr.qwen.errors import OptionsError
from qocr.qwen.tasks import TASKS, check_task_supported

_MODALITIES = ("image", "text", "video", "audio")


def parse_native(body: object, *, sse: bool) -> OcrCall:
    """Validate a DashScope request body; ``sse`` is the ``X-DashScope-SSE: enable`` header."""
    if not isinstance(body, Mapping):
        raise errors.invalid_body()
    spec = require_model(body.get("model"))
    payload = body.get("input")
    if payload is None:
        raise errors.missing_input()
    if not isinstance(payload, Mapping):
        raise type_error("dictionary", "input")
    if payload.get("messages") is None and payload.get("prompt") is None:
        raise errors.invalid_parameter(
            'Either "prompt" or "messages" must exist and cannot both be none'
        )
    messages = require_messages(payload.get("messages"), "input.messages")
    params = body.get("parameters") or {}
    if not isinstance(params, Mapping):
        raise type_error("dictionary", "parameters")
    images: list[ImageRef] = []
    texts: list[str] = []
    for index, message in enumerate(messages):
        _read_content(message["content"], f"input.messages.{index}.content", images, texts)
    check_pixel_bounds(images, spec)
    check_sampling(params, "parameters.")
    check_seed(params, "native")
    logprobs, top_logprobs = logprobs_request(params, spec, "parameters.")
    task, schema = _ocr_options(params.get("ocr_options"), spec)
    incremental = optional_bool(params, "incremental_output", "parameters.incremental_output")
    return OcrCall(
        api="native",
        model=spec,
        images=require_input(images, texts),
        prompt="\n".join(texts) if texts and task is None else None,
        task=task,
        result_schema=schema,
        max_tokens=max_tokens(params, spec),
        stream=sse,
        incremental_output=bool(incremental),
        stops=stop_sequences(params),
        logprobs=logprobs,
        top_logprobs=top_logprobs,
    )


def _read_content(content: object, location: str, images: list[ImageRef], texts: list[str]) -> None:
    if isinstance(content, str):
        texts.append(content)
        return
    if not isinstance(content, list):
        raise type_error("list", location)
    for index, item in enumerate(content):
        where = f"{location}.{index}"
        if not isinstance(item, Mapping) or not any(k in item for k in _MODALITIES):
            raise errors.invalid_parameter(
                "The item of content should be a message of a certain modal."
            )
        if "video" in item or "audio" in item:
            raise errors.image_format_unsupported()
        if "image" in item:
            images.append(_image_item(item, where))
        if "text" in item:
            text = item["text"]
            if not isinstance(text, str):
                raise type_error("string", f"{where}.text")
            texts.append(text)


def _image_item(item: Mapping[str, Any], where: str) -> ImageRef:
    url = item["image"]
    if not isinstance(url, str) or not url:
        raise type_error("string", f"{where}.image")
    rotate = optional_bool(item, "enable_rotate", f"{where}.enable_rotate")
    return ImageRef(
        url=url,
        min_pixels=optional_pixels(item, "min_pixels", f"{where}.min_pixels"),
        max_pixels=optional_pixels(item, "max_pixels", f"{where}.max_pixels"),
        enable_rotate=bool(rotate),
    )


def _ocr_options(options: object, spec: ModelSpec) -> tuple[str | None, Mapping[str, Any] | None]:
    if options is None:
        return None, None
    if not isinstance(options, Mapping):
        raise type_error("dictionary", "parameters.ocr_options")
    task = options.get("task")
    if task is None:
        raise errors.missing_parameter("parameters.ocr_options.task")
    if task not in TASKS:
        raise errors.invalid_parameter(
            f"Input should be {', '.join(repr(t) for t in TASKS)}: parameters.ocr_options.task"
        )
    try:
        check_task_supported(spec.name, str(task))
    except OptionsError as exc:
        # The documented model/task table lives in qocr.qwen.tasks; the service refuses
        # the same combinations.
        raise errors.invalid_parameter(
            f"The built-in task {task} is not supported by the model {spec.name}."
        ) from exc
    config = options.get("task_config")
    if config is None:
        return str(task), None
    if not isinstance(config, Mapping):
        raise type_error("dictionary", "parameters.ocr_options.task_config")
    schema = config.get("result_schema")
    if schema is None:
        return str(task), None
    if not isinstance(schema, Mapping):
        raise type_error("dictionary", "parameters.ocr_options.task_config.result_schema")
    if schema_depth(schema) > MAX_SCHEMA_DEPTH:
        raise errors.invalid_parameter(
            f"The result_schema can be nested at most {MAX_SCHEMA_DEPTH} levels deep: "
            "parameters.ocr_options.task_config.result_schema"
        )
    return str(task), schema
