"""The image the emulator "downloads" for a public URL, so demos with such URLs work offline.

The emulator never leaves the machine: an http(s) URL whose host is not loopback is answered
with this deterministic PNG instead of the real picture. It is white, sized from the URL when
the URL carries Alibaba CDN dimensions (``...-tps-689-487.jpg`` → 689×487) or 1024×768
otherwise, and shows in black:

    QOCR EMULATOR PLACEHOLDER
    <the URL's file name>
    two lines of words chosen by sha256(URL)

so both recognizers read the same text for the same URL, and usage counts real pixels.
"""

from __future__ import annotations

import hashlib
import io
import re
from collections import OrderedDict
from urllib.parse import urlsplit

from PIL import Image, ImageDraw, ImageFont

from qocr.emulator.recognition import VOCABULARY

DEFAULT_SIZE = (1024, 768)
TITLE = "QOCR EMULATOR PLACEHOLDER"
_CDN_SIZE = re.compile(r"-(\d{2,5})-(\d{2,5})\.[A-Za-z0-9]+$")
_MIN_SIDE, _MAX_SIDE = 64, 4096
_CACHE_SIZE = 64


def placeholder_size(url: str) -> tuple[int, int]:
    """The placeholder's (width, height) for ``url``."""
    match = _CDN_SIZE.search(urlsplit(url).path)
    if match is None:
        return DEFAULT_SIZE
    width, height = (int(v) for v in match.groups())
    # Keep the aspect ratio while bounding the sides (rendering a 6000 px PNG is slow).
    scale = min(1.0, _MAX_SIDE / max(width, height))
    return (max(_MIN_SIDE, round(width * scale)), max(_MIN_SIDE, round(height * scale)))


def placeholder_lines(url: str) -> list[str]:
    """The text drawn on the placeholder of ``url``."""
    digest = hashlib.sha256(url.encode("utf-8")).digest()
    name = urlsplit(url).path.rsplit("/", 1)[-1] or urlsplit(url).hostname or "image"
    words = [VOCABULARY[b % len(VOCABULARY)] for b in digest[:8]]
    return [TITLE, name[-32:], " ".join(words[:4]), " ".join(words[4:])]


def render_placeholder(url: str) -> bytes:
    """The placeholder PNG of ``url`` (deterministic: same URL, same bytes)."""
    width, height = placeholder_size(url)
    lines = placeholder_lines(url)
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    # Large and clear so that a real OCR engine reads it back; sized to the longest line.
    # Double spaces between words keep a real OCR engine from running them together.
    drawn = [line.replace(" ", "  ") for line in lines]
    size = max(10, min(height // (2 * len(lines) + 1), int(1.4 * width / max(map(len, drawn)))))
    font = ImageFont.load_default(size=size)
    y = size
    for line in drawn:
        draw.text((size // 2, y), line, fill="black", font=font)
        y += 2 * size
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


class PlaceholderCache:
    """Rendered placeholders by URL (rendering costs a few milliseconds)."""

    def __init__(self) -> None:
        self._items: OrderedDict[str, bytes] = OrderedDict()

    def get(self, url: str) -> bytes:
        data = self._items.get(url)
        if data is None:
            data = render_placeholder(url)
            self._items[url] = data
            while len(self._items) > _CACHE_SIZE:
                self._items.popitem(last=False)
        else:
            self._items.move_to_end(url)
        return data
