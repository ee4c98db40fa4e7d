"""Boxes, reading order, the hash recognizer and the placeholder image (no server)."""

from __future__ import annotations

import asyncio
import io
import math

import pytest
from PIL import Image

from qocr.emulator.geometry import location, rotate_rect
from qocr.emulator.placeholder import (
    DEFAULT_SIZE,
    TITLE,
    placeholder_lines,
    placeholder_size,
    render_placeholder,
)
from qocr.emulator.recognition import (
    VOCABULARY,
    HashRecognizer,
    Quad,
    TextLine,
    group_rows,
    hash_lines,
    make_recognizer,
    reading_order,
)


def rotated(cx: float, cy: float, w: float, h: float, degrees: float) -> Quad:
    a = math.radians(degrees)
    corners = [(-w / 2, -h / 2), (w / 2, -h / 2), (w / 2, h / 2), (-w / 2, h / 2)]
    points = [
        (cx + x * math.cos(a) - y * math.sin(a), cy + x * math.sin(a) + y * math.cos(a))
        for x, y in corners
    ]
    return (points[0], points[1], points[2], points[3])


@pytest.mark.parametrize("degrees", [0, 10, -30, 45, 89])
def test_rotate_rect_recovers_a_rotated_box(degrees: float) -> None:
    assert rotate_rect(rotated(300, 120, 200, 40, degrees)) == [300, 120, 200, 40, degrees]


def test_rotate_rect_angle_stays_within_90() -> None:
    # The same box listed from its other end: 180 degrees off, folded back into range.
    box = rotated(100, 100, 80, 20, 170)
    assert -90 <= rotate_rect(box)[4] <= 90


def test_location_is_eight_ints_clockwise() -> None:
    box: Quad = ((10.4, 20.6), (110.5, 20.0), (110.0, 50.2), (10.0, 50.0))
    assert location(box) == [10, 21, 110, 20, 110, 50, 10, 50]


def _line(text: str, x: float, y: float) -> TextLine:
    return TextLine(text, ((x, y), (x + 50, y), (x + 50, y + 20), (x, y + 20)))


def test_reading_order_and_rows() -> None:
    lines = [_line("c", 10, 100), _line("b", 200, 12), _line("a", 10, 10)]
    assert [ln.text for ln in reading_order(lines)] == ["a", "b", "c"]
    assert [[ln.text for ln in row] for row in group_rows(lines)] == [["a", "b"], ["c"]]


def test_hash_lines_are_deterministic_and_inside_the_image() -> None:
    data = b"any image bytes"
    first = hash_lines(data, 800, 600)
    assert first == hash_lines(data, 800, 600)
    assert first != hash_lines(b"other bytes", 800, 600)
    assert 2 <= len(first) <= 6
    for ln in first:
        words = ln.text.split()
        assert 2 <= len(words) <= 6
        assert words[0].lower() in VOCABULARY
        for x, y in ln.box:
            assert 0 <= x < 800 and 0 <= y < 600
    tops = [ln.box[0][1] for ln in first]
    assert tops == sorted(tops)


def test_hash_recognizer_and_factory() -> None:
    recognizer = make_recognizer("hash")
    assert isinstance(recognizer, HashRecognizer) and recognizer.name == "hash"
    lines = asyncio.run(recognizer.recognize(b"x", 100, 100))
    assert lines == hash_lines(b"x", 100, 100)


@pytest.mark.parametrize(
    ("url", "size"),
    [
        ("https://img.alicdn.com/i2/O1CN01!!6000000004408-0-tps-689-487.jpg", (689, 487)),
        ("https://img.alicdn.com/i2/x-2-tps-6000-3000.png", (4096, 2048)),
        ("https://example.com/scan.jpg", DEFAULT_SIZE),
        ("https://example.com/a-1-2.png?x=1", DEFAULT_SIZE),
    ],
)
def test_placeholder_size(url: str, size: tuple[int, int]) -> None:
    assert placeholder_size(url) == size


def test_placeholder_is_a_deterministic_png_of_that_size() -> None:
    url = "https://help-static-aliyun-doc.aliyuncs.com/file-manage-files/zh-CN/20241108/ctdzex/biaozhun.jpg"
    data = render_placeholder(url)
    assert data == render_placeholder(url)
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG" and image.size == DEFAULT_SIZE
    lines = placeholder_lines(url)
    assert lines[0] == TITLE and lines[1] == "biaozhun.jpg"
    assert lines != placeholder_lines(url + "?v=2")
