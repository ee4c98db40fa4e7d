"""Documents as local files: a local path as it is; S3 objects and URLs downloaded once.

A document is rendered a page at a time, and each of its pages is an item of its own, so
the same document is opened once per page. A local file is opened where it is; an S3
object or an http(s) URL is downloaded to a cache folder on this machine (a PDF is not
read into memory: it may be hundreds of MB) and its pages render from there. The cache is
bounded (oldest files go first) and keyed by the source and its fingerprint (an S3 ETag);
a URL, which has none, is downloaded again after :data:`URL_CACHE_SECONDS`.

Downloads are bounded too: http(s) only (redirects included), at most
:data:`DOCUMENT_MAX_BYTES`, and finished within the download deadline
(``LIMITS.document_download_deadline_seconds``) or retried later.

Which sources are documents: a local file whose first bytes say PDF or TIFF; an S3 key or
URL path ending in ``.pdf``, ``.tif`` or ``.tiff`` (the provider fetches other URLs itself,
and other S3 objects are read as images), whose downloaded bytes then decide.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from qocr.models.text_caps import cap
from qocr.redact import redact_url
from qocr.s3 import parse_s3_uri
from qocr.worker.fetch import FetchError, ImageFetcher, _s3_error
from qocr.worker.render import SNIFF_BYTES, DocumentKind, sniff_document

if TYPE_CHECKING:
    import httpx

DOCUMENT_SUFFIXES = (".pdf", ".tif", ".tiff")
DOCUMENT_MAX_BYTES = 512 * 1024 * 1024
CACHE_MAX_BYTES = 2 * 1024 * 1024 * 1024
URL_CACHE_SECONDS = 3600.0
CHUNK_BYTES = 1024 * 1024
SHOWN_CHARS = 300


def is_remote(source: str) -> bool:
    return source.startswith(("http://", "https://", "s3://"))


def named_as_document(source: str) -> bool:
    """True when an S3 key or URL path ends in a document suffix (the query is not the name)."""
    path = urlsplit(source).path if source.startswith(("http://", "https://")) else source
    return path.lower().endswith(DOCUMENT_SUFFIXES)


def local_head(path: Path) -> bytes | None:
    """The first bytes of a regular local file; None when it cannot be read so (the image
    path then says why). Never opens a FIFO or a device: they could block for ever."""
    try:
        if not stat.S_ISREG(os.stat(path).st_mode):
            return None
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except (OSError, ValueError):
        return None
    with os.fdopen(fd, "rb") as handle:
        try:
            if not stat.S_ISREG(os.fstat(fd).st_mode):
                return None
            return handle.read(SNIFF_BYTES)
        except OSError:
            return None


class DocumentFiles:
    """Finds documents and hands them out as local files; one per worker process."""

    def __init__(
        self,
        fetcher: ImageFetcher,
        folder: Path,
        deadline_seconds: float,
        *,
        max_bytes: int = DOCUMENT_MAX_BYTES,
        cache_bytes: int = CACHE_MAX_BYTES,
        http_client: Callable[[], httpx.Client] | None = None,
    ) -> None:
        self.fetcher = fetcher
        self.folder = folder
        self.deadline_seconds = deadline_seconds
        self.max_bytes = max_bytes
        self.cache_bytes = cache_bytes
        self._http_factory = http_client
        self._http: httpx.Client | None = None
        self._lock = threading.Lock()

    def local_kind(self, source: str) -> DocumentKind | None:
        """The document kind of a local source's bytes (None: not a document, or remote)."""
        if is_remote(source):
            return None
        head = local_head(Path(source))
        return None if head is None else sniff_document(head)

    def path(self, source: str, fingerprint: str | None) -> Path:
        """A local file holding ``source``'s bytes: the file itself, or a cached download."""
        if not is_remote(source):
            return _regular_file(Path(source))
        name = hashlib.sha256(f"{source}\0{fingerprint or ''}".encode()).hexdigest()
        cached = self.folder / name
        if self._fresh(cached, fingerprint is None):
            return cached
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        handle, partial = tempfile.mkstemp(prefix=".part-", dir=self.folder)
        os.close(handle)
        try:
            if source.startswith("s3://"):
                self._download_s3(source, Path(partial))
            else:
                self._download_url(source, Path(partial))
            # Atomic: another process reading the same name sees a whole file or none.
            os.replace(partial, cached)
        finally:
            Path(partial).unlink(missing_ok=True)
        self._evict(keep=cached)
        return cached

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    # -- the cache --------------------------------------------------------------------

    def _fresh(self, cached: Path, expires: bool) -> bool:
        try:
            age_seconds = time.time() - cached.stat().st_mtime
        except FileNotFoundError:
            return False
        if expires and age_seconds > URL_CACHE_SECONDS:
            return False
        os.utime(cached)  # recently used: evicted last
        return True

    def _evict(self, keep: Path) -> None:
        """Remove the least recently used files until the cache fits its budget."""
        entries = []
        for path in self.folder.iterdir():
            try:
                info = path.stat()
            except FileNotFoundError:
                continue
            entries.append((info.st_mtime, info.st_size, path))
        total = sum(size for _, size, _ in entries)
        for _, size, path in sorted(entries):
            if total <= self.cache_bytes:
                break
            if path == keep or path.name.startswith(".part-"):
                continue
            # A reader that has it open keeps reading it (POSIX); the name goes now.
            path.unlink(missing_ok=True)
            total -= size

    # -- downloads --------------------------------------------------------------------

    def _too_large(self, source: str, size: int | None = None) -> FetchError:
        what = f"{size:,} bytes" if size is not None else f"over {self.max_bytes:,} bytes"
        return FetchError(
            f"{_shown(source)} is {what}, over the {self.max_bytes:,} byte document limit",
            code="document_too_large",
        )

    def _download_s3(self, uri: str, target: Path) -> None:
        from botocore.exceptions import BotoCoreError, ClientError

        location = parse_s3_uri(uri)
        deadline = time.monotonic() + self.deadline_seconds
        try:
            response = self.fetcher.s3.get_object(Bucket=location.bucket, Key=location.key)
            body = response["Body"]
            try:
                if response["ContentLength"] > self.max_bytes:
                    raise self._too_large(uri, response["ContentLength"])
                with target.open("wb") as out:
                    for chunk in body.iter_chunks(CHUNK_BYTES):
                        self._check_progress(uri, out.tell() + len(chunk), deadline)
                        out.write(chunk)
            finally:
                body.close()
        except ClientError as exc:
            raise _s3_error(uri, exc) from None
        except BotoCoreError as exc:
            raise FetchError(
                f"S3 unreachable reading {uri}: {type(exc).__name__}",
                code="source_unreachable",
                retryable=True,
            ) from None

    def _download_url(self, url: str, target: Path) -> None:
        import httpx

        deadline = time.monotonic() + self.deadline_seconds
        try:
            with self._client().stream("GET", url) as response:
                if response.status_code >= 400:
                    raise _http_error(url, response.status_code)
                length = response.headers.get("content-length", "")
                if length.isdigit() and int(length) > self.max_bytes:
                    raise self._too_large(url, int(length))
                with target.open("wb") as out:
                    for chunk in response.iter_bytes(CHUNK_BYTES):
                        self._check_progress(url, out.tell() + len(chunk), deadline)
                        out.write(chunk)
        except httpx.HTTPError as exc:
            raise FetchError(
                f"could not download {_shown(url)}: {type(exc).__name__}",
                code="source_unreachable",
                retryable=True,
            ) from None

    def _check_progress(self, source: str, size: int, deadline: float) -> None:
        if size > self.max_bytes:
            raise self._too_large(source)
        if time.monotonic() > deadline:
            raise FetchError(
                f"downloading {_shown(source)} took over {self.deadline_seconds:g} s",
                code="source_unreachable",
                retryable=True,
            )

    def _client(self) -> httpx.Client:
        with self._lock:
            if self._http is None:
                self._http = self._http_factory() if self._http_factory else _default_client()
            return self._http


def _default_client() -> httpx.Client:
    import httpx

    # A silent server is given up on after the read timeout; the deadline bounds the rest.
    return httpx.Client(
        timeout=httpx.Timeout(10.0, read=20.0),
        follow_redirects=True,
        max_redirects=5,
        headers={"User-Agent": "qocr"},
    )


def _http_error(url: str, status: int) -> FetchError:
    shown = _shown(url)
    if status in (404, 410):
        return FetchError(f"no such document: {shown} (HTTP {status})", code="source_not_found")
    if status in (401, 403):
        return FetchError(f"access denied to {shown} (HTTP {status})", code="source_access_denied")
    retryable = status == 429 or status >= 500
    return FetchError(
        f"HTTP {status} downloading {shown}", code="source_unreachable", retryable=retryable
    )


def _regular_file(path: Path) -> Path:
    shown = cap(str(path), SHOWN_CHARS)
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        raise FetchError(f"no such file: {shown}", code="source_not_found") from None
    except PermissionError:
        raise FetchError(f"permission denied: {shown}", code="source_access_denied") from None
    except OSError as exc:
        raise FetchError(f"cannot read {shown}: {exc.strerror}", code="source_unreadable") from None
    if not stat.S_ISREG(mode):
        raise FetchError(f"{shown} is not a regular file", code="source_not_regular_file")
    return path


def _shown(source: str) -> str:
    """A source as a message may show it: signatures masked, length capped."""
    return cap(redact_url(source), SHOWN_CHARS)
