"""``POST /compatible-mode/v1/chat/completions`` body → :class:`OcrCall`.

Content parts: ``{"type": "text", "text"}`` and ``{"type": "image_url", "image_url":
{"url"}, "min_pixels", "max_pixels"}`` (the seed puts the pixel bounds beside ``image_url``;
inside it is accepted too; ``enable_rotate`` is read the same way, as qocr's client sends
it). There are no built-in tasks in this API: the prompt carries the task. ``top_k`` and
other DashScope extras arrive at the top level (``extra_body``). A call with text parts
only is accepted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from qocr.emulator import errors
from qocr.emulator.calls import (
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
    stop_sequences,
    type_error,
)


def parse_compatible(body: object) -> OcrCall:
    """Validate a compatible-mode request body like the real service does."""
    if not isinstance(body, Mapping):
        raise errors.invalid_body()
    spec = require_model(body.get("model"))
    messages = require_messages(body.get("messages"), "messages")
    images: list[ImageRef] = []
    texts: list[str] = []
    for index, message in enumerate(messages):
        _read_content(message["content"], f"messages.{index}.content", images, texts)
    check_pixel_bounds(images, spec)
    check_sampling(body, "")
    check_seed(body, "compatible")
    logprobs, top_logprobs = logprobs_request(body, spec, "")
    stream = optional_bool(body, "stream", "stream") or False
    include_usage = False
    options = body.get("stream_options")
    if options is not None:
        if not isinstance(options, Mapping):
            raise type_error("dictionary", "stream_options")
        include_usage = (
            optional_bool(options, "include_usage", "stream_options.include_usage") or False
        )
    return OcrCall(
        api="compatible",
        model=spec,
        images=require_input(images, texts),
        prompt="\n".join(texts) if texts else None,
        max_tokens=max_tokens(body, spec),
        stream=stream,
        include_usage=stream and include_usage,
        stops=stop_sequences(body),
        logprobs=logprobs,
        top_logprobs=top_logprobs,
    )


def _read_content(content: object, location: str, images: list[ImageRef], texts: list[str]) -> None:
    if isinstance(content, str):
        texts.append(content)
        return
    if not isinstance(content, list):
        raise type_error("list", location)
    for index, part in enumerate(content):
        where = f"{location}.{index}"
        if not isinstance(part, Mapping):
            raise type_error("dictionary", where)
        kind = part.get("type")
        if kind == "text":
            text = part.get("text")
            if not isinstance(text, str):
                raise type_error("string", f"{where}.text")
            texts.append(text)
        elif kind == "image_url":
            images.append(_image_part(part, where))
        else:
            raise errors.invalid_parameter(
                f"Input tag '{kind}' found using 'type' does not match any of the expected "
                f"tags: 'text', 'image_url': {where}"
            )


def _image_part(part: Mapping[str, Any], where: str) -> ImageRef:
    image_url = part.get("image_url")
    bounds: Mapping[str, Any] = part
    if isinstance(image_url, Mapping):
        url = image_url.get("url")
        # Pixel bounds may sit inside image_url too; the part's own win.
        bounds = {**image_url, **part}
    else:
        url = image_url
    if not isinstance(url, str) or not url:
        raise errors.missing_parameter(f"{where}.image_url.url")
    return ImageRef(
        url=url,
        min_pixels=optional_pixels(bounds, "min_pixels", f"{where}.min_pixels"),
        max_pixels=optional_pixels(bounds, "max_pixels", f"{where}.max_pixels"),
        enable_rotate=bool(optional_bool(bounds, "enable_rotate", f"{where}.enable_rotate")),
    )
