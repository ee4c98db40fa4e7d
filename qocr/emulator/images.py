"""Getting the bytes of an image part, and checking them like the service does.

* ``data:<mime>;base64,...``: decoded; the encoded item may hold at most 10 MiB.
* ``http(s)://`` on a loopback host (127.0.0.0/8, ``localhost``, ``::1``): fetched, as the
  service fetches public URLs. A URL that cannot be downloaded (refused, non-200, too slow)
  gets the service's 400 download error; the response must carry ``Content-Length`` and an
  ``image/*`` ``Content-Type``, as Alibaba requires of image URLs.
* ``http(s)://`` anywhere else: never fetched; the deterministic placeholder of
  :mod:`qocr.emulator.placeholder` stands in for it.
* Anything else (``file://``, ``oss://``, a bare path): the service's invalid-URL error.

Then the documented limits apply (:func:`qocr.qwen.images.inspect_image`), each failure
mapped to the real error code and message.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
from PIL import Image

from qocr.emulator import errors
from qocr.emulator.placeholder import PlaceholderCache
from qocr.qwen.errors import ImageError
from qocr.qwen.images import MAX_ENCODED_BYTES, decode_data_url, inspect_image

MAX_URL_BYTES = 10 * 1024 * 1024


@dataclass(frozen=True)
class LoadedImage:
    """An image ready to recognize; ``stats_key`` names it in ``/_stats``."""

    data: bytes
    width: int
    height: int
    mime: str
    stats_key: str  # sha256 of the bytes, or the URL for a placeholder
    placeholder: bool = False


def is_loopback_host(host: str | None) -> bool:
    if not host:
        return False
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class ImageLoader:
    """Loads image parts; owns no session, the app's is passed in (and closed by the app)."""

    def __init__(self, session: aiohttp.ClientSession, fetch_timeout_s: float) -> None:
        self._session = session
        self._timeout = aiohttp.ClientTimeout(total=fetch_timeout_s)
        self._placeholders = PlaceholderCache()

    async def load(self, url: str) -> LoadedImage:
        if url.startswith("data:"):
            return self._from_data_url(url)
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise errors.invalid_url()
        if is_loopback_host(parts.hostname):
            data = await self._fetch(url)
            return checked(data, source="url")
        data = self._placeholders.get(url)
        info = inspect_image(data)
        return LoadedImage(data, info.width, info.height, info.mime, url, placeholder=True)

    def _from_data_url(self, url: str) -> LoadedImage:
        payload_start = url.find(",") + 1
        if payload_start and len(url) - payload_start > MAX_ENCODED_BYTES:
            raise errors.data_uri_too_large(MAX_ENCODED_BYTES)
        try:
            _, data = decode_data_url(url)
        except ImageError as exc:
            raise errors.invalid_url() from exc
        return checked(data, source="data")

    async def _fetch(self, url: str) -> bytes:
        try:
            async with self._session.get(url, timeout=self._timeout) as response:
                if response.status != 200:
                    raise errors.download_failed(timed_out=False)
                if response.content_length is None:
                    raise errors.missing_content_length()
                if not response.headers.get("Content-Type", "").lower().startswith("image/"):
                    raise errors.wrong_content_type()
                if response.content_length > MAX_URL_BYTES:
                    raise errors.file_too_large()
                return await response.read()
        except TimeoutError as exc:
            raise errors.download_failed(timed_out=True) from exc
        except (aiohttp.ClientError, asyncio.IncompleteReadError, OSError) as exc:
            raise errors.download_failed(timed_out=False) from exc


def checked(data: bytes, *, source: str) -> LoadedImage:
    """``data`` measured and checked against the documented limits (or the real error)."""
    try:
        info = inspect_image(data)
    except ImageError as exc:
        raise image_error(exc, data, source=source) from exc
    sha = hashlib.sha256(data).hexdigest()
    return LoadedImage(data, info.width, info.height, info.mime, sha)


def image_error(exc: ImageError, data: bytes, *, source: str) -> errors.ApiError:
    """The service's error for a limit :func:`inspect_image` found broken."""
    if exc.code == "image_too_small":
        return errors.image_too_small(*_size(data))
    if exc.code == "image_aspect_ratio":
        return errors.image_aspect_ratio(*_size(data))
    if exc.code == "image_too_many_pixels":
        return errors.image_too_many_pixels()
    if exc.code == "image_too_large":
        return (
            errors.data_uri_too_large(MAX_ENCODED_BYTES)
            if source == "data"
            else errors.file_too_large()
        )
    if exc.code == "image_unsupported_format":
        return errors.image_format_unsupported()
    return errors.image_undecodable()


def _size(data: bytes) -> tuple[int, int]:
    # Only for the error message: the header, never the pixels.
    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except Exception:  # any unreadable header: the message then shows zeros
        return (0, 0)
