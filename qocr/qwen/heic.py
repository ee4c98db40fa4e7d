"""HEIC sniffing and dimensions, read from the ISO-BMFF boxes (Pillow cannot open HEIC).

A HEIC file starts with an ``ftyp`` box naming a HEIF brand; its size lives in ``ispe``
(image spatial extents) properties under ``meta/iprp/ipco``. A gridded photo carries one
``ispe`` per tile and thumbnail as well as the full canvas, so we take the largest one:
the canvas always covers its tiles. Nothing is decoded.
"""

from __future__ import annotations

import struct

# Brands of HEIF files whose images are HEVC-coded (HEIC). AVIF ("avif", "avis") is another
# format that shares the container, so "mif1"/"msf1" alone only count without an AVIF brand.
_HEIC_BRANDS = frozenset({b"heic", b"heix", b"hevc", b"hevx", b"heim", b"heis", b"hevm", b"hevs"})
_GENERIC_BRANDS = frozenset({b"mif1", b"msf1"})
_AVIF_BRANDS = frozenset({b"avif", b"avis"})
_CONTAINERS = {b"meta": 4, b"iprp": 0, b"ipco": 0}  # box type -> bytes to skip (full box header)


def is_heic(data: bytes) -> bool:
    """True when ``data`` starts with an ``ftyp`` box of a HEIC brand."""
    if len(data) < 16 or data[4:8] != b"ftyp":
        return False
    size = struct.unpack(">I", data[:4])[0]
    if size < 16 or size > len(data):
        return False
    brands = {data[8:12]} | {data[i : i + 4] for i in range(16, size - 3, 4)}
    if brands & _HEIC_BRANDS:
        return True
    return bool(brands & _GENERIC_BRANDS) and not brands & _AVIF_BRANDS


def heic_size(data: bytes) -> tuple[int, int] | None:
    """Width and height of the largest ``ispe`` property, or None when there is none."""
    best: tuple[int, int] | None = None
    for box_type, start, end in _walk(data, 0, len(data), depth=0):
        if box_type == b"ispe" and end - start >= 12:
            # Full box: 1 byte version, 3 bytes flags, then width and height as u32.
            width, height = struct.unpack(">II", data[start + 4 : start + 12])
            if best is None or width * height > best[0] * best[1]:
                best = (width, height)
    return best


def _walk(data: bytes, start: int, end: int, depth: int) -> list[tuple[bytes, int, int]]:
    """Boxes (type, payload start, payload end) between ``start`` and ``end``, recursing."""
    found: list[tuple[bytes, int, int]] = []
    pos = start
    while pos + 8 <= end and depth < 6:
        size, box_type = struct.unpack(">I4s", data[pos : pos + 8])
        header = 8
        if size == 1:  # 64-bit size follows the type
            if pos + 16 > end:
                break
            size = struct.unpack(">Q", data[pos + 8 : pos + 16])[0]
            header = 16
        elif size == 0:  # box runs to the end of its parent
            size = end - pos
        if size < header or pos + size > end:
            break
        payload = pos + header
        found.append((box_type, payload, pos + size))
        if box_type in _CONTAINERS:
            skip = _CONTAINERS[box_type]
            found.extend(_walk(data, payload + skip, pos + size, depth + 1))
        pos += size
    return found
