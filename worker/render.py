"""Documents (PDF, multi-page TIFF) as pages the model can read: count them, render one.

The type is sniffed from the bytes (:func:`sniff_document`), never taken from the name.
PDFs are rendered with PDFium (pypdfium2), TIFF frames are read with Pillow; each page is
drawn at the scale that fits the batch's pixel limit (what the model would downscale to
anyway: more pixels cost bytes, not accuracy), or at ``--dpi`` when that is less, then
encoded as PNG or JPEG, whichever is smaller. One page is in memory at a time: a document of
3,000 pages costs what one page does.

PDFium is not thread-safe, and a worker may run items on threads: every PDFium call holds
one lock per process (a prefork worker has one slot per process anyway).
"""

from __future__ import annotations

import io
import math
import threading
import warnings
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from PIL import Image, UnidentifiedImageError

from qocr.qwen.errors import ImageError
from qocr.qwen.images import MAX_ENCODED_BYTES, MAX_PIXELS, MIN_SIDE_EXCLUSIVE_PX, base64_size
from qocr.qwen.options import RecognizeOptions
from qocr.qwen.tokens import pixel_bounds

# A PDF's header may follow some junk, within its first 1,024 bytes (PDF 1.7, H.3 note 13).
SNIFF_BYTES = 1024
POINTS_PER_INCH = 72.0
JPEG_QUALITY = 85
# The colour check draws the page this many times smaller on each side (1/64 of the pixels).
PROBE_SHRINK = 8.0
# An encoded page over the 10 MB request limit is encoded again at these JPEG qualities.
FALLBACK_JPEG_QUALITIES = (70, 55, 40)
# A TIFF frame larger than this is refused rather than decoded (it would take gigabytes).
TIFF_FRAME_MAX_PIXELS = 120_000_000
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")
_PDFIUM_LOCK = threading.Lock()


class DocumentKind(StrEnum):
    PDF = "pdf"
    TIFF = "tiff"


class DocumentError(ImageError):
    """A document that cannot be read as pages: encrypted, corrupt, empty, too long, a
    page that renders to nothing. Found before any call; the item fails with ``code``."""

    code = "document_corrupt"


def sniff_document(head: bytes) -> DocumentKind | None:
    """The document kind the first bytes of a file name (None: not a PDF or a TIFF)."""
    if head[:4] in _TIFF_MAGIC:
        return DocumentKind.TIFF
    if b"%PDF-" in head[:SNIFF_BYTES]:
        return DocumentKind.PDF
    return None


@dataclass(frozen=True)
class RenderLimits:
    """How large a page may be drawn: at most ``max_pixels``, at most ``dpi`` when set."""

    max_pixels: int
    dpi: float | None = None

    @classmethod
    def for_request(cls, options: RecognizeOptions, dpi: float | None) -> RenderLimits:
        """The batch's pixel cap (``max_pixels``, else the model's default), never above what
        one image may have."""
        high = pixel_bounds(options.model, options.min_pixels, options.max_pixels)[1]
        return cls(max_pixels=min(high, MAX_PIXELS), dpi=dpi)

    def scale(self, width: float, height: float, units_per_inch: float | None) -> float:
        """The factor from a page of ``width`` × ``height`` units to pixels.

        ``units_per_inch``: the page's resolution (72 for PDF points; a TIFF's dpi, or None
        when it has none, when ``dpi`` cannot apply). The page is never drawn above the pixel
        cap, and each side stays above the model's minimum.
        """
        scale = math.sqrt(self.max_pixels / max(width * height, 1e-9))
        if self.dpi is not None and units_per_inch:
            scale = min(scale, self.dpi / units_per_inch)
        shortest = min(width, height)
        if shortest > 0 and shortest * scale <= MIN_SIDE_EXCLUSIVE_PX:
            scale = (MIN_SIDE_EXCLUSIVE_PX + 1) / shortest
        return scale


@dataclass(frozen=True)
class RenderedPage:
    """One page, encoded: the bytes sent (PNG or JPEG), their type and size in pixels."""

    data: bytes
    mime: str
    width: int
    height: int


class Document(ABC):
    """An open document; use :func:`open_document`. ``page_count`` pages, from 1."""

    kind: DocumentKind
    page_count: int

    def render(self, page: int, limits: RenderLimits) -> RenderedPage:
        """Page ``page`` (from 1) drawn within ``limits`` and encoded."""
        image = self._draw(page, limits)
        width, height = image.size
        try:
            if _is_blank(image):
                raise DocumentError(
                    f"page {page} renders to nothing (a blank {width}x{height} page)",
                    code="page_blank",
                )
            data, mime = encode_smallest(image)
        finally:
            image.close()
        return RenderedPage(data=data, mime=mime, width=width, height=height)

    @abstractmethod
    def _draw(self, page: int, limits: RenderLimits) -> Image.Image:
        """Page ``page`` as a Pillow image within ``limits`` (the kind's own renderer)."""

    @abstractmethod
    def close(self) -> None:
        """Release the document's file and memory."""


@contextmanager
def open_document(path: Path) -> Iterator[Document]:
    """The document at ``path``, of the kind its bytes name; closed on exit.

    Raises :class:`DocumentError` (``document_encrypted``, ``document_corrupt``,
    ``document_empty``) when it cannot be read as pages.
    """
    with path.open("rb") as handle:
        kind = sniff_document(handle.read(SNIFF_BYTES))
    if kind is None:
        raise DocumentError(f"{path.name} is not a PDF or a TIFF", code="document_corrupt")
    document: Document = _Pdf(path) if kind is DocumentKind.PDF else _Tiff(path)
    try:
        yield document
    finally:
        document.close()


class _Pdf(Document):
    kind = DocumentKind.PDF

    def __init__(self, path: Path) -> None:
        import pypdfium2

        with _PDFIUM_LOCK:
            _set_last_error()
            try:
                self._pdf: Any = pypdfium2.PdfDocument(str(path))
            except pypdfium2.PdfiumError as exc:
                raise _pdf_error(exc, path) from None
            self.page_count = len(self._pdf)
        if self.page_count == 0:
            self.close()
            raise DocumentError("the PDF has no pages", code="document_empty")

    def _draw(self, page: int, limits: RenderLimits) -> Image.Image:
        _check_page(page, self.page_count)
        with _PDFIUM_LOCK:
            pdf_page = self._pdf[page - 1]
            try:
                width, height = pdf_page.get_size()
                if width <= 0 or height <= 0:
                    raise DocumentError(f"page {page} has no size", code="page_blank")
                scale = _whole_pixels(limits.scale(width, height, POINTS_PER_INCH), width, height)
                # A black-and-white page (most invoices) is drawn in gray: a third of the
                # memory and of the bytes to encode. A small draw first says which it is.
                probe = pdf_page.render(scale=scale / PROBE_SHRINK, rev_byteorder=True)
                try:
                    gray = _colourless(probe.to_pil())
                finally:
                    probe.close()
                bitmap = pdf_page.render(scale=scale, rev_byteorder=True, grayscale=gray)
                try:
                    # An image Pillow owns (a gray bitmap's buffer is shared: copied); the
                    # bitmap is PDFium's memory, freed at once.
                    drawn: Image.Image = bitmap.to_pil()
                    image = drawn.copy() if drawn.mode == "L" else drawn
                finally:
                    bitmap.close()
            finally:
                pdf_page.close()
        return image

    def close(self) -> None:
        with _PDFIUM_LOCK:
            self._pdf.close()


def _whole_pixels(scale: float, width: float, height: float) -> float:
    """The scale at which PDFium's bitmap (whose sides it rounds up) stays within the area
    ``scale`` gives: sides rounded down first, then a hair under them."""
    target_width = max(1, math.floor(width * scale))
    target_height = max(1, math.floor(height * scale))
    return min(target_width / width, target_height / height) * (1 - 1e-9)


# PDFium keeps its last error until a failure sets another, and one failure sets none: a
# file it parses but finds no page in. Before each load the error is set to "password" by
# this document (encrypted, no password given); a failure that leaves it so, in a file
# with no /Encrypt, is that one.
_SENTINEL_PDF = (
    b"%PDF-1.4\n1 0 obj\n<< /Type /Catalog /Pages 2 0 R >>\nendobj\n"
    b"2 0 obj\n<< /Type /Pages /Kids [] /Count 0 >>\nendobj\n"
    b"3 0 obj\n<< /Filter /Standard /V 1 /R 2 /O <"
    + b"11" * 32
    + b"> /U <"
    + b"22" * 32
    + b"> /P -4 >>\nendobj\ntrailer\n<< /Size 4 /Root 1 0 R /Encrypt 3 0 R"
    b" /ID [<00112233445566778899aabbccddeeff> <00112233445566778899aabbccddeeff>] >>\n%%EOF\n"
)
# An encrypted PDF names its /Encrypt dictionary in its trailer, near its end (or, when
# linearized, near its start too).
ENCRYPT_SCAN_BYTES = 64 * 1024


def _set_last_error() -> None:
    import pypdfium2

    with suppress(pypdfium2.PdfiumError):
        pypdfium2.PdfDocument(_SENTINEL_PDF).close()


def _pdf_error(exc: Exception, path: Path) -> DocumentError:
    import pypdfium2.raw as pdfium_c

    code = getattr(exc, "err_code", None)
    if _names_encryption(path):
        return DocumentError(
            "the PDF is encrypted: it needs a password to open", code="document_encrypted"
        )
    if code in (pdfium_c.FPDF_ERR_SUCCESS, pdfium_c.FPDF_ERR_PASSWORD):
        # Parsed, but no document in it (no catalog, no page): see _SENTINEL_PDF.
        return DocumentError("the PDF has no pages", code="document_empty")
    return DocumentError(
        "the PDF is corrupt or truncated (PDFium cannot read its structure)",
        code="document_corrupt",
    )


def _names_encryption(path: Path) -> bool:
    with path.open("rb") as handle:
        head = handle.read(ENCRYPT_SCAN_BYTES)
        size = handle.seek(0, io.SEEK_END)
        handle.seek(max(size - ENCRYPT_SCAN_BYTES, 0))
        tail = handle.read()
    return b"/Encrypt" in head or b"/Encrypt" in tail


class _Tiff(Document):
    kind = DocumentKind.TIFF

    def __init__(self, path: Path) -> None:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                self._image: Any = Image.open(path, formats=["TIFF"])
                self.page_count = int(getattr(self._image, "n_frames", 1))
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
            raise DocumentError(
                f"the TIFF is corrupt or truncated ({type(exc).__name__})", code="document_corrupt"
            ) from None
        except Image.DecompressionBombError:
            raise _too_many_pixels(1) from None

    def _draw(self, page: int, limits: RenderLimits) -> Image.Image:
        _check_page(page, self.page_count)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", Image.DecompressionBombWarning)
                self._image.seek(page - 1)
                width, height = self._image.size
                if width * height > TIFF_FRAME_MAX_PIXELS:
                    raise _too_many_pixels(page)
                frame = _plain_mode(self._image)
        except Image.DecompressionBombError:
            raise _too_many_pixels(page) from None
        except (OSError, SyntaxError, ValueError, EOFError) as exc:
            raise DocumentError(
                f"page {page} of the TIFF is corrupt or truncated ({type(exc).__name__})",
                code="document_corrupt",
            ) from None
        dpi = self._image.info.get("dpi")
        units_per_inch = float(dpi[0]) if dpi and dpi[0] else None
        # A scan is never enlarged (that adds no detail), except above the minimum side.
        scale = min(limits.scale(width, height, units_per_inch), 1.0)
        if min(width, height) * scale <= MIN_SIDE_EXCLUSIVE_PX:
            scale = limits.scale(width, height, units_per_inch)
        if abs(scale - 1.0) < 1e-6:
            return frame
        size = (max(1, math.floor(width * scale)), max(1, math.floor(height * scale)))
        source = frame.convert("L") if frame.mode == "1" else frame
        resized = source.resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0)
        if source is not frame:
            source.close()
        frame.close()
        return resized

    def close(self) -> None:
        self._image.close()


def _too_many_pixels(page: int) -> DocumentError:
    return DocumentError(
        f"page {page} of the TIFF has more than {TIFF_FRAME_MAX_PIXELS:,} pixels",
        code="image_too_many_pixels",
    )


def _check_page(page: int, page_count: int) -> None:
    if not 1 <= page <= page_count:
        # The document changed between its expansion and this page (a new upload).
        raise DocumentError(
            f"page {page} does not exist: the document now has {page_count} pages",
            code="document_changed",
        )


def _plain_mode(frame: Image.Image) -> Image.Image:
    """The frame, decoded, in a mode PNG and JPEG both take (bilevel stays bilevel)."""
    frame.load()
    if frame.mode in ("1", "L", "RGB"):
        return frame.copy()
    if frame.mode in ("LA", "La", "I", "I;16", "I;16B", "I;16L", "F"):
        return frame.convert("L")
    return frame.convert("RGB")


def _colourless(image: Image.Image) -> bool:
    """True when an RGB image's three channels are equal everywhere (no colour on it)."""
    from PIL import ImageChops

    if image.mode != "RGB":
        return image.mode in ("1", "L")
    red, green, blue = image.split()
    return (
        ImageChops.difference(red, green).getbbox() is None
        and ImageChops.difference(green, blue).getbbox() is None
    )


def _is_blank(image: Image.Image) -> bool:
    """True when every pixel has the same value (nothing drawn on the page)."""
    if image.width == 0 or image.height == 0:
        return True
    extrema: Any = image.getextrema()
    if image.mode in ("1", "L"):
        return bool(extrema[0] == extrema[1])
    return all(low == high for low, high in extrema)


def encode_smallest(image: Image.Image) -> tuple[bytes, str]:
    """The page as PNG or JPEG, whichever is smaller, within the request's size limit."""
    candidates = [(_encode(image, "PNG"), "image/png")]
    photo = image.convert("L") if image.mode == "1" else image
    candidates.append((_encode(photo, "JPEG", quality=JPEG_QUALITY), "image/jpeg"))
    data, mime = min(candidates, key=lambda pair: len(pair[0]))
    for quality in FALLBACK_JPEG_QUALITIES:
        if base64_size(len(data)) <= MAX_ENCODED_BYTES:
            break
        data, mime = _encode(photo, "JPEG", quality=quality), "image/jpeg"
    if photo is not image:
        photo.close()
    return data, mime


def _encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()
