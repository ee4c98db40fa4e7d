"""Reading the text of an image: RapidOCR when installed, else words derived from the bytes.

Both recognizers return :class:`TextLine` values in reading order (top to bottom, then left
to right), each with its quadrilateral clockwise from the top-left corner, in pixels of the
image read. Results are cached by the image's sha256 (and ``rotate``): the emulator answers
the same image the same way, as a deterministic service should.

``rotate`` (the request's ``enable_rotate``): RapidOCR first finds the quarter turn that makes
the page upright (:mod:`qocr.emulator.orientation`) and reads the turned page, boxes in its
pixels; without it a page on its side is read as it lies, lines out of order. The ``hash``
recognizer reads no pixels and ignores it.
"""

from __future__ import annotations

import asyncio
import hashlib
import importlib.util
import io
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

from PIL import Image

from qocr.emulator.config import RecognizerName
from qocr.emulator.orientation import turn, upright_angle

Point = tuple[float, float]
Quad = tuple[Point, Point, Point, Point]

_CACHE_SIZE = 256

# The "hash" recognizer's vocabulary: words a scanned business document might hold.
VOCABULARY = (
    "invoice", "receipt", "total", "amount", "date", "number", "customer", "account",
    "payment", "due", "tax", "subtotal", "item", "quantity", "price", "order", "address",
    "phone", "email", "company", "street", "city", "code", "reference", "balance", "bank",
    "transfer", "station", "ticket", "seat", "class", "passenger", "departure", "arrival",
    "contract", "signature", "page", "section", "report", "summary", "annual", "quarter",
    "revenue", "expense", "profit", "delivery", "shipping", "service", "product", "unit",
    "discount", "currency", "note", "approved", "issued", "valid", "until", "office",
    "branch", "manager", "department", "record", "form", "copy",
)  # fmt: skip


@dataclass(frozen=True)
class TextLine:
    """One recognized line: its text, its box (clockwise from top-left) and a confidence."""

    text: str
    box: Quad
    score: float = 1.0


class Recognizer(Protocol):
    """Reads the lines of an image; ``name`` says which engine answered."""

    name: str

    async def recognize(
        self, data: bytes, width: int, height: int, *, rotate: bool = False
    ) -> list[TextLine]: ...

    async def close(self) -> None: ...


def _centre_y(line: TextLine) -> float:
    return sum(p[1] for p in line.box) / 4


def _left(line: TextLine) -> float:
    return min(p[0] for p in line.box)


def group_rows(lines: list[TextLine]) -> list[list[TextLine]]:
    """Lines grouped into rows (centres within half a line height), each row left to right."""
    rows: list[list[TextLine]] = []
    for line in sorted(lines, key=lambda ln: (_centre_y(ln), _left(ln))):
        height = max(p[1] for p in line.box) - min(p[1] for p in line.box)
        if rows and abs(_centre_y(rows[-1][0]) - _centre_y(line)) <= max(height, 1.0) / 2:
            rows[-1].append(line)
        else:
            rows.append([line])
    return [sorted(row, key=_left) for row in rows]


def reading_order(lines: list[TextLine]) -> list[TextLine]:
    """Lines top to bottom, and left to right within a row."""
    return [line for row in group_rows(lines) for line in row]


class _Cache:
    def __init__(self) -> None:
        self._items: OrderedDict[str, list[TextLine]] = OrderedDict()

    def get(self, key: str) -> list[TextLine] | None:
        value = self._items.get(key)
        if value is not None:
            self._items.move_to_end(key)
        return value

    def put(self, key: str, value: list[TextLine]) -> None:
        self._items[key] = value
        while len(self._items) > _CACHE_SIZE:
            self._items.popitem(last=False)


class HashRecognizer:
    """Deterministic stand-in: 2-6 lines of 2-5 vocabulary words chosen by sha256(bytes)."""

    name = "hash"

    async def recognize(
        self, data: bytes, width: int, height: int, *, rotate: bool = False
    ) -> list[TextLine]:
        return hash_lines(data, width, height)

    async def close(self) -> None:
        return None


def hash_lines(data: bytes, width: int, height: int) -> list[TextLine]:
    """The lines the ``hash`` recognizer reads in ``data`` (pure, deterministic)."""
    digest = hashlib.sha256(data).digest()
    stream = digest + hashlib.sha256(digest).digest()
    count = 2 + stream[0] % 5
    words_per_line = [2 + stream[1 + i] % 4 for i in range(count)]
    cursor = 8
    texts: list[str] = []
    for n in words_per_line:
        words = [VOCABULARY[stream[(cursor + k) % len(stream)] % len(VOCABULARY)] for k in range(n)]
        cursor += n
        # Capitalise the first word and end some lines with a number, like real documents.
        if stream[(cursor + 3) % len(stream)] % 2:
            words.append(str(int.from_bytes(stream[cursor % 32 : cursor % 32 + 2], "big")))
        texts.append(" ".join([words[0].capitalize(), *words[1:]]))
    line_height = height / (count + 2)
    glyph_width = min(0.9 * width / max(len(t) for t in texts), 0.6 * line_height)
    lines = []
    for i, text in enumerate(texts):
        top = line_height * (i + 1) + 0.15 * line_height
        bottom = top + 0.7 * line_height
        left = 0.05 * width
        right = min(width - 1.0, left + glyph_width * len(text))
        box: Quad = ((left, top), (right, top), (right, bottom), (left, bottom))
        lines.append(TextLine(text=text, box=box, score=1.0))
    return lines


class RapidOcrRecognizer:
    """RapidOCR (PP-OCR on onnxruntime), loaded once and lazily, run in one worker thread."""

    name = "rapidocr"

    def __init__(self) -> None:
        # One thread: the engine is created and used there only, and CPU-bound runs queue up
        # instead of fighting over the cores; the event loop never blocks.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="qocr-ocr")
        self._engine: Any = None
        self._cache = _Cache()

    async def recognize(
        self, data: bytes, width: int, height: int, *, rotate: bool = False
    ) -> list[TextLine]:
        key = hashlib.sha256(data).hexdigest() + (":upright" if rotate else "")
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        loop = asyncio.get_running_loop()
        run = self._run_upright if rotate else self._run
        lines = await loop.run_in_executor(self._executor, run, data)
        self._cache.put(key, lines)
        return lines

    def _run_upright(self, data: bytes) -> list[TextLine]:
        with Image.open(io.BytesIO(data)) as opened:
            image = opened.convert("RGB")
        angle = upright_angle(image, lambda page: self._read(page, use_cls=False))
        if angle == 0:
            return self._run(data)  # exactly what the page reads without enable_rotate
        return self._read(turn(image, angle), use_cls=True)

    def _run(self, data: bytes) -> list[TextLine]:
        return self._read(data, use_cls=True)

    def _read(self, image: bytes | Image.Image, *, use_cls: bool) -> list[TextLine]:
        if self._engine is None:
            from rapidocr_onnxruntime import RapidOCR

            self._engine = RapidOCR()
        result, _elapsed = self._engine(image, use_cls=use_cls)
        lines = []
        for box, text, score in result or []:
            quad: Quad = tuple((float(x), float(y)) for x, y in box)  # type: ignore[assignment]
            lines.append(TextLine(text=str(text), box=quad, score=float(score)))
        return reading_order(lines)

    async def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


def rapidocr_available() -> bool:
    return importlib.util.find_spec("rapidocr_onnxruntime") is not None


def make_recognizer(name: RecognizerName) -> Recognizer:
    """The recognizer ``name`` asks for; ``auto`` prefers RapidOCR when it is installed."""
    if name == "hash" or (name == "auto" and not rapidocr_available()):
        return HashRecognizer()
    if not rapidocr_available():
        raise ValueError(
            "recognizer 'rapidocr' needs the optional 'local' extra (rapidocr-onnxruntime)"
        )
    return RapidOcrRecognizer()
