"""The API-agnostic middle of a call: images in, :class:`Completion` out.

Steps, each a named function: load and check the images, price them (documented resize rule
of :mod:`qocr.qwen.tokens`), read their text (turned upright first where ``enable_rotate``
asks for it), render the answer, cut and bill it. A text-only call (no image) reads nothing
and gets a fixed reply (:data:`~qocr.emulator.answers.TEXT_ONLY_REPLY`) or, with a built-in
task, the task's empty answer.
"""

from __future__ import annotations

import logging
import time

from qocr.emulator.answers import Answer, answer, input_prompt, text_only_answer
from qocr.emulator.calls import OcrCall
from qocr.emulator.completion import Completion, build_completion
from qocr.emulator.images import ImageLoader, LoadedImage
from qocr.emulator.recognition import Recognizer, TextLine, hash_lines
from qocr.emulator.textunits import count_tokens
from qocr.qwen.tokens import image_tokens

log = logging.getLogger(__name__)


async def load_images(loader: ImageLoader, call: OcrCall) -> list[LoadedImage]:
    return [await loader.load(ref.url) for ref in call.images]


def price_images(call: OcrCall, images: list[LoadedImage]) -> int:
    """Image tokens of the call: each image resized within its own pixel bounds."""
    return sum(
        image_tokens(image.width, image.height, call.model.name, ref.min_pixels, ref.max_pixels)
        for ref, image in zip(call.images, images, strict=True)
    )


def prompt_of(call: OcrCall) -> str:
    return input_prompt(call.task, call.prompt, call.result_schema)


def input_tokens(call: OcrCall, images: list[LoadedImage]) -> int:
    """What the token window reserves when the call is admitted."""
    return price_images(call, images) + count_tokens(prompt_of(call))


async def read_text(
    recognizer: Recognizer, call: OcrCall, images: list[LoadedImage]
) -> list[TextLine]:
    lines: list[TextLine] = []
    for ref, image in zip(call.images, images, strict=True):
        try:
            lines += await recognizer.recognize(
                image.data, image.width, image.height, rotate=ref.enable_rotate
            )
        except Exception:
            # An engine that cannot decode this format (HEIC without a codec): answer like
            # the hash recognizer rather than fail a request the service would accept.
            log.warning(
                "recognizer %s failed; using the hash reading", recognizer.name, exc_info=True
            )
            lines += hash_lines(image.data, image.width, image.height)
    return lines


def complete(
    call: OcrCall,
    images: list[LoadedImage],
    lines: list[TextLine],
    *,
    request_id: str,
    completion_id: str,
) -> Completion:
    return build_completion(
        render(call, lines),
        request_id=request_id,
        completion_id=completion_id,
        created=int(time.time()),
        model=call.model.name,
        image_tokens=price_images(call, images),
        prompt=prompt_of(call),
        max_tokens=call.max_tokens,
        stops=call.stops,
        logprobs=call.logprobs,
        top_logprobs=call.top_logprobs,
    )


def render(call: OcrCall, lines: list[TextLine]) -> Answer:
    """What the model says about ``lines``, in the form the task or the prompt asks for."""
    if not call.images and call.task is None:
        return text_only_answer()
    return answer(lines, task=call.task, prompt=call.prompt, schema=call.result_schema)
