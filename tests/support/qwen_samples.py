"""For the Qwen-OCR unit tests: synthetic images, and the seed's recorded answers kept in
tests/unit/qwen/fixtures."""

from __future__ import annotations

import io
import json
import struct
from pathlib import Path
from typing import Any

from PIL import Image

FIXTURES = Path(__file__).resolve().parents[1] / "unit" / "qwen" / "fixtures"
API_KEY = "sk-TESTKEY-9f8e7d6c5b4a"  # recognisable, so leak checks can look for it


def make_image(width: int, height: int, fmt: str = "PNG") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "white").save(buffer, fmt)
    return buffer.getvalue()


def _box(kind: bytes, payload: bytes) -> bytes:
    return struct.pack(">I", 8 + len(payload)) + kind + payload


def make_heic(sizes: list[tuple[int, int]], brand: bytes = b"heic") -> bytes:
    """A minimal HEIF container: ftyp + meta/iprp/ipco with one ispe per size. No pixels."""
    ftyp = _box(b"ftyp", brand + b"\0\0\0\0" + b"mif1" + brand)
    ispes = b"".join(_box(b"ispe", b"\0\0\0\0" + struct.pack(">II", w, h)) for w, h in sizes)
    meta = _box(b"meta", b"\0\0\0\0" + _box(b"iprp", _box(b"ipco", ispes)))
    return ftyp + meta + _box(b"mdat", b"\0" * 16)


def load_fixture(name: str) -> Any:
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"))
