"""Image inputs: sniff the real format, read the size without decoding, check the limits.

Every check runs before any network call, so a bad image costs nothing and fails with one of
our codes: ``image_empty``, ``image_unsupported_format``, ``image_too_large``,
``image_too_small``, ``image_aspect_ratio``, ``image_too_many_pixels``, ``image_truncated``
(and, for sources, ``image_not_found`` / ``image_unsupported_source``).

Size: local bytes always travel as a base64 data URL, and the documented 10 MB cap applies to
that encoded string, which is 4/3 of the raw size; so the raw limit is about 7.5 MB. We count
10 MB as 10 MiB. http(s) URLs are sent as they are and are not fetched or checked here.
"""

from __future__ import annotations

import base64
import binascii
import io
import re
import warnings
from dataclasses import dataclass
from pathlib import Path

from PIL import Image, UnidentifiedImageError

from qocr.qwen.errors import ImageError
from qocr.qwen.heic import heic_size, is_heic

MAX_ENCODED_BYTES = 10 * 1024 * 1024
MIN_SIDE_EXCLUSIVE_PX = 10  # each side must be larger than this
MAX_ASPECT_RATIO = 200
MAX_PIXELS = 15_680_000
SUPPORTED_MIME_TYPES = (
    "image/bmp",
    "image/jpeg",
    "image/png",
    "image/tiff",
    "image/webp",
    "image/heic",
)
_PILLOW_FORMATS = {
    "image/bmp": "BMP",
    "image/jpeg": "JPEG",
    "image/png": "PNG",
    "image/tiff": "TIFF",
    "image/webp": "WEBP",
}
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_DATA_URL = re.compile(r"^data:(?P<mime>[^;,]*)(?P<params>(;[^;,]*)*),(?P<payload>.*)$", re.S)


@dataclass(frozen=True)
class ImageInfo:
    """What we know about a local image: its real MIME type, size in pixels and bytes."""

    mime: str
    width: int
    height: int
    size_bytes: int

    @property
    def encoded_bytes(self) -> int:
        """Length of the base64 payload that carries these bytes."""
        return base64_size(self.size_bytes)


@dataclass(frozen=True)
class PreparedImage:
    """The image as it goes on the wire; ``info`` is None for http(s) URLs (not fetched)."""

    url: str
    info: ImageInfo | None


# A caller that checked an image once (the worker estimates its tokens from its size first)
# passes the PreparedImage back, and it is not decoded and checked a second time.
ImageSource = str | Path | bytes | bytearray | memoryview | PreparedImage


def base64_size(raw_bytes: int) -> int:
    """Length of the base64 encoding of ``raw_bytes`` bytes (padding included)."""
    return 4 * ((raw_bytes + 2) // 3)


def sniff_mime(data: bytes) -> str | None:
    """The MIME type named by the file's magic bytes, or None when it is not one we know."""
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"BM") and len(data) >= 26:
        return "image/bmp"
    if data[:4] in (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+"):
        return "image/tiff"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if is_heic(data):
        return "image/heic"
    return None


def _describe_unsupported(data: bytes) -> str:
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "GIF"
    if data.startswith(b"%PDF"):
        return "PDF"
    if data[4:8] == b"ftyp":
        return "an ISO media file that is not HEIC (e.g. AVIF or video)"
    return "not a recognised image"


def inspect_image(data: bytes | bytearray | memoryview) -> ImageInfo:
    """Sniff, measure and check an image; raise :class:`ImageError` naming the broken limit."""
    data = bytes(data)
    if not data:
        raise ImageError("image is empty (0 bytes)", code="image_empty")
    encoded = base64_size(len(data))
    if encoded > MAX_ENCODED_BYTES:
        raise ImageError(
            f"image is too large: {len(data)} bytes are {encoded} bytes as base64, over the "
            f"{MAX_ENCODED_BYTES} byte (10 MB) limit on the encoded image",
            code="image_too_large",
        )
    mime = sniff_mime(data)
    if mime is None:
        raise ImageError(
            f"unsupported image format ({_describe_unsupported(data)}); supported formats: "
            "BMP, JPEG, PNG, TIFF, WEBP, HEIC",
            code="image_unsupported_format",
        )
    width, height = _dimensions(data, mime)
    info = ImageInfo(mime=mime, width=width, height=height, size_bytes=len(data))
    check_dimensions(info.width, info.height)
    return info


def check_dimensions(width: int, height: int) -> None:
    """Raise :class:`ImageError` when a ``width`` × ``height`` image breaks a pixel limit."""
    # Aspect first: a 3000×10 strip is refused for its shape, the more useful message.
    short, long = sorted((width, height))
    if short > 0 and long / short > MAX_ASPECT_RATIO:
        raise ImageError(
            f"image aspect ratio {long / short:.0f}:1 ({width}x{height} px) is over the "
            f"{MAX_ASPECT_RATIO}:1 limit",
            code="image_aspect_ratio",
        )
    if short <= MIN_SIDE_EXCLUSIVE_PX:
        raise ImageError(
            f"image is too small: {width}x{height} px; each side must be larger than "
            f"{MIN_SIDE_EXCLUSIVE_PX} px",
            code="image_too_small",
        )
    if width * height > MAX_PIXELS:
        raise ImageError(
            f"image has too many pixels: {width}x{height} = {width * height}, over the "
            f"{MAX_PIXELS} (15.68 M) pixel limit",
            code="image_too_many_pixels",
        )


def _dimensions(data: bytes, mime: str) -> tuple[int, int]:
    if mime == "image/heic":
        size = heic_size(data)
        if size is None:
            raise ImageError(
                "unsupported image format: HEIC without a readable size (ispe) box",
                code="image_unsupported_format",
            )
        return size
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            # Image.open reads the header only; the pixels are never decoded here.
            with Image.open(io.BytesIO(data), formats=[_PILLOW_FORMATS[mime]]) as image:
                return image.size
    except Image.DecompressionBombError as exc:
        raise ImageError(
            f"image has too many pixels: over the {MAX_PIXELS} (15.68 M) pixel limit",
            code="image_too_many_pixels",
        ) from exc
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError, EOFError) as exc:
        raise ImageError(
            f"unsupported image format: {mime} header is unreadable or truncated",
            code="image_unsupported_format",
        ) from exc


def to_data_url(data: bytes, mime: str) -> str:
    """``data:<mime>;base64,<payload>``, the form both APIs accept for local images."""
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def decode_data_url(url: str) -> tuple[str, bytes]:
    """The declared MIME type and the bytes of a base64 ``data:`` URL."""
    match = _DATA_URL.match(url)
    if match is None or ";base64" not in match.group("params"):
        raise ImageError(
            "unsupported image source: a data URL must be base64 encoded",
            code="image_unsupported_source",
        )
    try:
        payload = base64.b64decode(match.group("payload"), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ImageError(
            "unsupported image source: the data URL's base64 payload is invalid",
            code="image_unsupported_source",
        ) from exc
    return match.group("mime"), payload


def prepare_image(source: ImageSource) -> PreparedImage:
    """Turn a URL, data URL, path or bytes into what goes on the wire, checking local images.

    http(s) URLs are sent as they are; everything else becomes a data URL with the MIME type
    sniffed from the bytes, whatever the file name or the declared type says. An image
    prepared before (the worker checks it once to estimate its tokens) passes through.
    """
    if isinstance(source, PreparedImage):
        return source
    if isinstance(source, bytes | bytearray | memoryview):
        return _from_bytes(bytes(source))
    if isinstance(source, str):
        if source.startswith(("http://", "https://")):
            return PreparedImage(url=source, info=None)
        if source.startswith("data:"):
            return _from_bytes(decode_data_url(source)[1])
        if _SCHEME.match(source):
            raise ImageError(
                "unsupported image source: only http(s) URLs, data URLs, paths and bytes",
                code="image_unsupported_source",
            )
    path = Path(source)
    try:
        data = path.read_bytes()
    except FileNotFoundError as exc:
        raise ImageError(f"image file not found: {path}", code="image_not_found") from exc
    except OSError as exc:
        raise ImageError(
            f"image file unreadable: {path}: {exc.strerror}", code="image_not_found"
        ) from exc
    return _from_bytes(data)


def _from_bytes(data: bytes) -> PreparedImage:
    info = inspect_image(data)
    check_complete(data, info.mime)
    return PreparedImage(url=to_data_url(data, info.mime), info=info)


_PNG_IEND = b"IEND\xaeB`\x82"  # the IEND chunk's type and CRC: always the same 8 bytes
_JPEG_EOI, _JPEG_SOS = b"\xff\xd9", b"\xff\xda"
_TAIL_BYTES = 4096


def check_complete(data: bytes, mime: str) -> None:
    """Raise ``image_truncated`` when a PNG or JPEG stops before its end marker.

    The header of a file cut while being written or copied is valid, and the service decodes
    what it can of the rest and charges for it. The end is cheap to check; bytes after it
    (zero padding, a phone's metadata trailer) are allowed, at the cost of one search.
    Inside a JPEG's compressed data 0xFF is always escaped, so an EOI after the last
    start-of-scan marker means the image data is whole.
    """
    tail = data[-_TAIL_BYTES:]
    if mime == "image/png":
        complete = tail.endswith(_PNG_IEND) or data.rfind(_PNG_IEND) != -1
        marker = "IEND chunk"
    elif mime == "image/jpeg":
        complete = tail.rstrip(b"\0").endswith(_JPEG_EOI) or (
            data.rfind(_JPEG_EOI) > data.rfind(_JPEG_SOS)
        )
        marker = "end-of-image marker"
    else:  # Pillow refuses a cut WebP already; BMP, TIFF and HEIC have no end marker
        return
    if not complete:
        raise ImageError(
            f"image is truncated: the {mime.removeprefix('image/').upper()} data stops before "
            f"its {marker} ({len(data)} bytes; was the file cut while being written or copied?)",
            code="image_truncated",
        )
