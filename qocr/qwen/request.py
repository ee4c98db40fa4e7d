"""Request building, sans I/O: (API, base URL, key, image, options) → method, URL, headers, JSON.

Field placement follows the seed's examples. Compatible: the image part carries
``min_pixels`` / ``max_pixels`` (and ``enable_rotate``, placed the same way; the seed does
not show it for this API) beside ``image_url``; sampling parameters sit at the top level
(``top_k`` too, which the OpenAI SDK would put in ``extra_body``). Native: the image part
carries the pixel bounds and ``enable_rotate``; everything else goes in ``parameters``,
including ``ocr_options``; with a built-in task the message has no text part.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from qocr.qwen.catalog import Api, endpoint
from qocr.qwen.options import RecognizeOptions
from qocr.qwen.tasks import task_prompt

_SAMPLING = (
    "max_tokens",
    "temperature",
    "top_p",
    "top_k",
    "repetition_penalty",
    "presence_penalty",
    "seed",
    "stop",
    "logprobs",
    "top_logprobs",
)


@dataclass(frozen=True)
class HttpRequest:
    """A request ready for any HTTP client; ``repr`` hides the Authorization header."""

    method: str
    url: str
    headers: dict[str, str] = field(repr=False)
    json: dict[str, Any]
    stream: bool = False


def _sampling(options: RecognizeOptions) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in _SAMPLING:
        value = getattr(options, name)
        if value is not None:
            values[name] = list(value) if isinstance(value, tuple) else value
    return values


def _image_extras(options: RecognizeOptions) -> dict[str, Any]:
    extras: dict[str, Any] = {}
    if options.min_pixels is not None:
        extras["min_pixels"] = options.min_pixels
    if options.max_pixels is not None:
        extras["max_pixels"] = options.max_pixels
    if options.enable_rotate is not None:
        extras["enable_rotate"] = options.enable_rotate
    return extras


def compatible_body(image_url: str, options: RecognizeOptions) -> dict[str, Any]:
    """The JSON of a ``/chat/completions`` call; a task becomes its documented prompt."""
    content: list[dict[str, Any]] = [
        {"type": "image_url", "image_url": {"url": image_url}, **_image_extras(options)}
    ]
    prompt = options.prompt
    if prompt is None and options.task is not None:
        prompt = task_prompt(options.task, options.result_schema)
    if prompt is not None:
        content.append({"type": "text", "text": prompt})
    body: dict[str, Any] = {
        "model": options.model,
        "messages": [{"role": "user", "content": content}],
    }
    if options.stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    body.update(_sampling(options))
    return body


def native_body(image_url: str, options: RecognizeOptions) -> dict[str, Any]:
    """The JSON of a native multimodal-generation call."""
    content: list[dict[str, Any]] = [{"image": image_url, **_image_extras(options)}]
    if options.task is None and options.prompt is not None:
        content.append({"text": options.prompt})
    parameters: dict[str, Any] = {}
    if options.task is not None:
        ocr_options: dict[str, Any] = {"task": options.task}
        if options.result_schema:
            ocr_options["task_config"] = {"result_schema": options.result_schema}
        parameters["ocr_options"] = ocr_options
    parameters.update(_sampling(options))
    if options.stream:
        parameters["incremental_output"] = True
    body: dict[str, Any] = {
        "model": options.model,
        "input": {"messages": [{"role": "user", "content": content}]},
    }
    if parameters:
        body["parameters"] = parameters
    return body


def build_request(
    api: Api, base_url: str, api_key: str, image_url: str, options: RecognizeOptions
) -> HttpRequest:
    """The full request of one recognize call."""
    headers = {
        "Authorization": f"Bearer {api_key}",
        "Content-Type": "application/json",
        "Accept": "text/event-stream" if options.stream else "application/json",
    }
    if api == "dashscope" and options.stream:
        headers["X-DashScope-SSE"] = "enable"
    body = (
        compatible_body(image_url, options)
        if api == "compatible"
        else native_body(image_url, options)
    )
    return HttpRequest("POST", endpoint(base_url, api), headers, body, options.stream)
