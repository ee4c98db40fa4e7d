"""Finding the quarter turn that makes a page upright, with a scripted reader."""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image

from qocr.emulator.orientation import Line, Reader, turn, upright_angle, vertical_share
from qocr.emulator.recognition import Quad, TextLine

WIDE: Quad = ((0.0, 0.0), (100.0, 0.0), (100.0, 20.0), (0.0, 20.0))
TALL: Quad = ((0.0, 0.0), (20.0, 0.0), (20.0, 100.0), (0.0, 100.0))


def page(width: int, height: int) -> Image.Image:
    # Pixels mark the turn: the top-left pixel is black, the rest white.
    image = Image.new("L", (width, height), 255)
    image.putpixel((0, 0), 0)
    return image


def turned_by(image: Image.Image) -> int:
    """Which quarter turn of the 40×30 test page ``image`` is."""
    corners = {(0, 0): 0, (0, image.height - 1): 90, (image.width - 1, image.height - 1): 180}
    for corner, angle in corners.items():
        if image.getpixel(corner) == 0:
            return angle
    return 270


def scripted(readings: dict[int, list[TextLine]], seen: list[int]) -> Reader:
    def read(image: Image.Image) -> Sequence[Line]:
        angle = turned_by(image)
        seen.append(angle)
        return readings[angle]

    return read


def lines(box: Quad, score: float, n: int = 3) -> list[TextLine]:
    return [TextLine(text="Total 99.50", box=box, score=score) for _ in range(n)]


def test_turn_is_counter_clockwise_and_lossless() -> None:
    image = page(40, 30)
    assert turn(image, 90).size == (30, 40) and turned_by(turn(image, 90)) == 90
    assert turn(turn(image, 90), 270).tobytes() == image.tobytes()


def test_vertical_share_counts_characters() -> None:
    assert vertical_share(lines(TALL, 1.0)) == 1.0
    assert vertical_share(lines(WIDE, 1.0)) == 0.0
    assert vertical_share([]) == 0.0


def test_an_upright_page_is_read_once() -> None:
    seen: list[int] = []
    angle = upright_angle(page(40, 30), scripted({0: lines(WIDE, 0.99)}, seen))
    assert (angle, seen) == (0, [0])


def test_a_page_on_its_side_gets_the_turn_whose_reading_is_confident() -> None:
    seen: list[int] = []
    readings = {0: lines(TALL, 0.95), 90: lines(WIDE, 0.3, 1), 270: lines(WIDE, 0.98)}
    assert upright_angle(page(40, 30), scripted(readings, seen)) == 270
    assert seen == [0, 90, 270]


def test_an_upside_down_page_is_turned_half_way() -> None:
    readings = {0: lines(WIDE, 0.4), 180: lines(WIDE, 0.97)}
    assert upright_angle(page(40, 30), scripted(readings, [])) == 180


def test_no_confident_reading_picks_the_most_confident_text_and_nothing_read_is_upright() -> None:
    readings = {0: lines(TALL, 0.5), 90: lines(WIDE, 0.6, 1), 270: lines(WIDE, 0.7, 2)}
    assert upright_angle(page(40, 30), scripted(readings, [])) == 270
    assert upright_angle(page(40, 30), scripted({0: []}, [])) == 0
