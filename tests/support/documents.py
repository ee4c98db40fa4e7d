"""Small test documents: multi-page PDFs and TIFFs whose pages differ, and broken PDFs.

Every page carries its own text and mark, so each rendered page has its own sha256 (the
emulator's hash recognizer then answers each page with its own words).
"""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image, ImageDraw

PAGE_SIZE = (425, 550)  # a letter page at 50 dpi


def page_image(label: str, index: int, size: tuple[int, int] = PAGE_SIZE) -> Image.Image:
    image = Image.new("RGB", size, (255, 255, 255))
    draw = ImageDraw.Draw(image)
    draw.text((20, 20), label, fill=(0, 0, 0))
    draw.text((20, 40), f"page {index}", fill=(0, 0, 0))
    draw.rectangle((20, 60, 20 + (index * 37) % 300, 66), fill=(0, 0, 0))
    return image


def pdf_bytes(pages: int, label: str = "document", blank: tuple[int, ...] = ()) -> bytes:
    """A PDF of ``pages`` pages (Pillow writes one image per page); ``blank``: pages left
    white."""
    images = [
        Image.new("RGB", PAGE_SIZE, (255, 255, 255)) if n in blank else page_image(label, n)
        for n in range(1, pages + 1)
    ]
    buffer = io.BytesIO()
    images[0].save(buffer, format="PDF", save_all=True, append_images=images[1:], resolution=50)
    return buffer.getvalue()


def tiff_bytes(pages: int, label: str = "scan") -> bytes:
    images = [page_image(label, n).convert("L") for n in range(1, pages + 1)]
    buffer = io.BytesIO()
    images[0].save(buffer, format="TIFF", save_all=True, append_images=images[1:], dpi=(50, 50))
    return buffer.getvalue()


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def _pdf_of(objects: list[bytes], trailer: bytes) -> bytes:
    out = io.BytesIO()
    out.write(b"%PDF-1.4\n")
    offsets = []
    for number, body in enumerate(objects, start=1):
        offsets.append(out.tell())
        out.write(b"%d 0 obj\n" % number + body + b"\nendobj\n")
    xref = out.tell()
    out.write(b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1))
    for offset in offsets:
        out.write(b"%010d 00000 n \n" % offset)
    out.write(b"trailer\n<< /Size %d " % (len(objects) + 1) + trailer + b" >>\n")
    out.write(b"startxref\n%d\n%%%%EOF\n" % xref)
    return out.getvalue()


def encrypted_pdf_bytes() -> bytes:
    """A PDF under the standard security handler whose user password is not empty."""
    objects = [
        b"<< /Type /Catalog /Pages 2 0 R >>",
        b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
        b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>",
        b"<< /Filter /Standard /V 1 /R 2 /O <"
        + b"11" * 32
        + b"> /U <"
        + b"22" * 32
        + b"> /P -4 >>",
    ]
    file_id = b"<00112233445566778899aabbccddeeff>"
    return _pdf_of(objects, b"/Root 1 0 R /Encrypt 4 0 R /ID [" + file_id + b" " + file_id + b"]")


def empty_pdf_bytes() -> bytes:
    """A well-formed PDF with a page tree of no pages."""
    objects = [b"<< /Type /Catalog /Pages 2 0 R >>", b"<< /Type /Pages /Kids [] /Count 0 >>"]
    return _pdf_of(objects, b"/Root 1 0 R")


def corrupt_pdf_bytes() -> bytes:
    """A PDF cut in the middle of its first page (a partial upload)."""
    whole = pdf_bytes(2, "corrupt")
    return whole[: len(whole) // 3]
