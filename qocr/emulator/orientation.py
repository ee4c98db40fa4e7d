"""Which way up a page is, for ``enable_rotate``: the quarter turn that makes its text upright.

Read once without the engine's per-line direction classifier: if most text runs vertically,
the page lies on its side (90° or 270°), else it is upright or upside down (0° or 180°).
Each candidate turn is then read the same way, in order, and the first whose reading is
confident wins (without the classifier, upside-down text reads as low-confidence noise);
when none is, the candidate read with the most confident text overall. Angles are
counter-clockwise, as in Pillow's ``Image.rotate``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from PIL import Image

# A reading this sure of itself, on average, is of upright text.
CONFIDENT_MEAN_SCORE = 0.9

_TURNS = {
    90: Image.Transpose.ROTATE_90,
    180: Image.Transpose.ROTATE_180,
    270: Image.Transpose.ROTATE_270,
}


class Line(Protocol):
    """What is read of one line (:class:`qocr.emulator.recognition.TextLine`)."""

    @property
    def text(self) -> str: ...

    @property
    def box(self) -> Sequence[tuple[float, float]]: ...

    @property
    def score(self) -> float: ...


Reader = Callable[[Image.Image], Sequence[Line]]


def turn(image: Image.Image, angle: int) -> Image.Image:
    """``image`` turned ``angle`` degrees counter-clockwise (a lossless quarter turn)."""
    return image if angle % 360 == 0 else image.transpose(_TURNS[angle % 360])


def _width_height(line: Line) -> tuple[float, float]:
    xs = [point[0] for point in line.box]
    ys = [point[1] for point in line.box]
    return max(xs) - min(xs), max(ys) - min(ys)


def vertical_share(lines: Sequence[Line]) -> float:
    """The share of the text (by characters) in boxes taller than wide."""
    total = sum(len(line.text) for line in lines)
    if total == 0:
        return 0.0
    vertical = 0
    for line in lines:
        width, height = _width_height(line)
        if height > width:
            vertical += len(line.text)
    return vertical / total


def confidence(lines: Sequence[Line]) -> float:
    """Confidence weighted by characters: long, sure lines count most."""
    return sum(line.score * len(line.text) for line in lines)


def is_confident(lines: Sequence[Line]) -> bool:
    return bool(lines) and sum(line.score for line in lines) / len(lines) >= CONFIDENT_MEAN_SCORE


def upright_angle(image: Image.Image, read: Reader) -> int:
    """The counter-clockwise quarter turn that makes ``image``'s text upright (0 if unsure).

    ``read`` must not correct each line's direction itself (RapidOCR: ``use_cls=False``).
    """
    first = read(image)
    if not first:
        return 0
    candidates = (90, 270) if vertical_share(first) > 0.5 else (0, 180)
    readings: dict[int, Sequence[Line]] = {}
    for angle in candidates:
        lines = first if angle == 0 else read(turn(image, angle))
        if is_confident(lines):
            return angle
        readings[angle] = lines
    return max(candidates, key=lambda angle: confidence(readings[angle]))
