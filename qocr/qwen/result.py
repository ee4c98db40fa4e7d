"""The normalized answer of one recognize call, the same whichever API or mode produced it."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Usage:
    """Tokens of one call; both APIs' field names mapped onto ours.

    ``text_tokens`` counts the input text (prompt + template). ``total_tokens`` is computed
    as input + output when the server leaves it out.
    """

    input_tokens: int = 0
    output_tokens: int = 0
    image_tokens: int = 0
    text_tokens: int = 0
    total_tokens: int = 0


@dataclass(frozen=True)
class WordInfo:
    """One text line of ``advanced_recognition``.

    ``location``: the four corners [x1, y1, ..., x4, y4] clockwise from the top-left;
    ``rotate_rect``: [center_x, center_y, width, height, angle] with angle in [-90, 90].
    """

    text: str
    location: tuple[float, ...] = ()
    rotate_rect: tuple[float, ...] = ()


@dataclass(frozen=True)
class OCRResult:
    """What the model answered, with the structured parts taken out of the text.

    ``parsed`` is the body of the answer's fenced block: decoded JSON (dict or list) for
    ```` ```json ```` (None when it does not decode, e.g. truncated), the HTML or LaTeX
    source as a string otherwise; None when there is nothing structured to take out.
    """

    text: str
    finish_reason: str | None = None
    usage: Usage | None = None
    request_id: str | None = None
    model: str | None = None
    kv_result: dict[str, Any] | list[Any] | None = None
    words_info: tuple[WordInfo, ...] | None = None
    parsed: Any = None
    logprobs: dict[str, Any] | None = None

    @property
    def truncated(self) -> bool:
        """True when generation stopped at ``max_tokens`` (``finish_reason == "length"``)."""
        return self.finish_reason == "length"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict, for persisting the result."""
        return asdict(self)
