"""Small, distinct test images, and the text the emulator's hash recognizer reads in them."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, ImageDraw

from qocr.emulator.recognition import hash_lines


def png_bytes(index: int, size: tuple[int, int] = (320, 120)) -> bytes:
    """A PNG that differs from every other index (so each has its own sha256)."""
    image = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(image)
    draw.text((10, 10), f"document {index:06d}", fill=(0, 0, 0))
    draw.rectangle((5, 5, 5 + index % 300, 8), fill=(index % 256, 0, 0))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def write_pngs(folder: Path, count: int, start: int = 0) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(start, start + count):
        path = folder / f"doc-{index:05d}.png"
        path.write_bytes(png_bytes(index))
        paths.append(path)
    return paths


def expected_text(data: bytes) -> str:
    """What the emulator (hash recognizer, plain text task) answers for ``data``."""
    with Image.open(io.BytesIO(data)) as image:
        width, height = image.size
    return "\n".join(line.text for line in hash_lines(data, width, height))
