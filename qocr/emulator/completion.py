"""From an :class:`~qocr.emulator.answers.Answer` to what is billed and sent: stop sequences,
``max_tokens`` truncation, ``finish_reason`` and usage. Pure: both APIs' shapes read this.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from qocr.emulator.answers import Answer
from qocr.emulator.logprobs import token_logprobs
from qocr.emulator.textunits import count_tokens, cut_at_stop, truncate

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class Usage:
    """Tokens of one call, in the emulator's counting (:mod:`qocr.emulator.textunits`)."""

    image_tokens: int
    text_tokens: int  # the prompt the model read
    output_tokens: int

    @property
    def input_tokens(self) -> int:
        return self.image_tokens + self.text_tokens

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


@dataclass(frozen=True)
class Completion:
    """One finished answer with everything both APIs need to write it."""

    request_id: str
    completion_id: str  # "chatcmpl-…", compatible mode's id
    created: int  # UNIX seconds
    model: str
    text: str
    finish_reason: FinishReason
    usage: Usage
    ocr_result: dict[str, Any] | None = None
    # One entry per output token when logprobs were asked for (qocr.emulator.logprobs).
    logprobs: list[dict[str, Any]] | None = None


def finish(
    answer: Answer, *, max_tokens: int, stops: tuple[str, ...]
) -> tuple[str, FinishReason, dict[str, Any] | None]:
    """The text actually sent, why it ended, and the structured result if still whole.

    A stop sequence ends the text before it (``stop``); past ``max_tokens`` tokens the text is
    cut (``length``). A cut answer carries no ``ocr_result``: its JSON is not whole anymore.
    """
    text, _stopped = cut_at_stop(answer.text, stops)
    text, cut = truncate(text, max_tokens)
    if cut:
        return text, "length", None
    return text, "stop", answer.ocr_result


def build_completion(
    answer: Answer,
    *,
    request_id: str,
    completion_id: str,
    created: int,
    model: str,
    image_tokens: int,
    prompt: str,
    max_tokens: int,
    stops: tuple[str, ...],
    logprobs: bool = False,
    top_logprobs: int = 0,
) -> Completion:
    text, reason, ocr_result = finish(answer, max_tokens=max_tokens, stops=stops)
    usage = Usage(
        image_tokens=image_tokens,
        text_tokens=count_tokens(prompt),
        output_tokens=count_tokens(text),
    )
    return Completion(
        request_id=request_id,
        completion_id=completion_id,
        created=created,
        model=model,
        text=text,
        finish_reason=reason,
        usage=usage,
        ocr_result=ocr_result,
        logprobs=token_logprobs(text, top_logprobs) if logprobs else None,
    )
