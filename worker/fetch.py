"""Read an item's image from where its source says: a local file, S3, or (as is) a URL.

What comes back is what the client takes: bytes (sent as a data URL with the real MIME type)
or an http(s) URL (sent as is; the provider downloads it, and reports when it cannot).
"""

from __future__ import annotations

import errno
import mimetypes
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from qocr.errors import QocrError
from qocr.models.text_caps import cap
from qocr.qwen.images import MAX_ENCODED_BYTES
from qocr.s3 import parse_s3_uri
from qocr.scheduler.sources import file_kind

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

PRESIGN_SECONDS = 3600
# A path in a message is cut to this: a manifest line can be a megabyte long.
SHOWN_PATH_CHARS = 300


class FetchError(QocrError):
    """The image could not be read; ``retryable`` when trying later may help."""

    code = "source_unreadable"

    def __init__(self, message: str, *, code: str, retryable: bool = False) -> None:
        super().__init__(message, code=code)
        self.retryable = retryable


class ImageFetcher:
    """Loads sources for the worker; one instance per process (it holds the S3 client)."""

    def __init__(self, s3_client: Callable[[], S3Client]) -> None:
        self._s3_factory = s3_client
        self._s3: S3Client | None = None

    @property
    def s3(self) -> S3Client:
        if self._s3 is None:
            self._s3 = self._s3_factory()
        return self._s3

    def fetch(
        self, source: str, s3_mode: str = "inline", presign_seconds: int = PRESIGN_SECONDS
    ) -> bytes | str:
        """``presign_seconds``: how long a presigned URL lives (batch mode: beyond 24 h)."""
        if source.startswith(("http://", "https://")):
            return source
        if source.startswith("s3://"):
            if s3_mode == "presign":
                return self._s3_presigned(source, presign_seconds)
            return self._s3_bytes(source)
        return _local_bytes(Path(source))

    def _s3_bytes(self, uri: str) -> bytes:
        from botocore.exceptions import BotoCoreError, ClientError

        location = parse_s3_uri(uri)
        try:
            response = self.s3.get_object(Bucket=location.bucket, Key=location.key)
            # Do not download what the provider would refuse anyway (the exact check on the
            # encoded size is the client's).
            if response["ContentLength"] > MAX_ENCODED_BYTES:
                response["Body"].close()
                raise FetchError(
                    f"{uri} is {response['ContentLength']} bytes, over the 10 MB image limit",
                    code="image_too_large",
                )
            return response["Body"].read()
        except ClientError as exc:
            raise _s3_error(uri, exc) from None
        except BotoCoreError as exc:
            raise FetchError(
                f"S3 unreachable reading {uri}: {type(exc).__name__}",
                code="source_unreachable",
                retryable=True,
            ) from None

    def _s3_presigned(self, uri: str, expires_seconds: int = PRESIGN_SECONDS) -> str:
        location = parse_s3_uri(uri)
        params = {"Bucket": location.bucket, "Key": location.key}
        # The provider refuses a URL served without an image Content-Type, and objects are
        # often uploaded without one: have S3 answer with the type the name implies.
        mime, _ = mimetypes.guess_type(location.key)
        if mime and mime.startswith("image/"):
            params["ResponseContentType"] = mime
        return self.s3.generate_presigned_url(
            "get_object", Params=params, ExpiresIn=expires_seconds
        )


def _s3_error(uri: str, exc: Exception) -> FetchError:
    response = getattr(exc, "response", {}) or {}
    code = str(response.get("Error", {}).get("Code", ""))
    status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    if code in ("NoSuchKey", "404", "NotFound"):
        return FetchError(f"no such S3 object: {uri}", code="source_not_found")
    if code == "NoSuchBucket":
        return FetchError(f"no such S3 bucket for {uri}", code="source_not_found")
    if code in ("AccessDenied", "403") or status == 403:
        return FetchError(f"access denied to {uri}", code="source_access_denied")
    retryable = status is None or status >= 500 or code in ("SlowDown", "RequestTimeout")
    return FetchError(
        f"S3 error {code or status} reading {uri}", code="source_s3_error", retryable=retryable
    )


def _local_bytes(path: Path) -> bytes:
    shown = cap(str(path), SHOWN_PATH_CHARS)
    try:
        # A path seen at submit may be a FIFO, a device or a socket now: stat it before any
        # open (opening a FIFO with no writer blocks the thread for ever, its lease renewed
        # all along), then open without blocking and check the file opened, in case the
        # path changed in between.
        _check_regular(os.stat(path), shown)
        fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_NOCTTY | os.O_CLOEXEC)
    except FileNotFoundError:
        raise FetchError(f"no such file: {shown}", code="source_not_found") from None
    except PermissionError:
        raise FetchError(f"permission denied: {shown}", code="source_access_denied") from None
    except OSError as exc:
        if exc.errno == errno.ENXIO:  # what opening a socket answers
            raise FetchError(
                f"{shown} is not a regular file", code="source_not_regular_file"
            ) from None
        raise FetchError(f"cannot read {shown}: {exc.strerror}", code="source_unreadable") from None
    with os.fdopen(fd, "rb") as handle:
        _check_regular(os.fstat(fd), shown)
        try:
            # The file may grow after the stat: never read more than the limit allows.
            data = handle.read(MAX_ENCODED_BYTES + 1)
        except OSError as exc:
            raise FetchError(
                f"cannot read {shown}: {exc.strerror}", code="source_unreadable"
            ) from None
    if len(data) > MAX_ENCODED_BYTES:
        raise FetchError(
            f"{shown} is over {MAX_ENCODED_BYTES} bytes, the 10 MB image limit",
            code="image_too_large",
        )
    return data


def _check_regular(status: os.stat_result, shown: str) -> None:
    mode = status.st_mode
    if stat.S_ISREG(mode):
        if status.st_size > MAX_ENCODED_BYTES:
            raise FetchError(
                f"{shown} is {status.st_size} bytes, over the 10 MB image limit",
                code="image_too_large",
            )
        return
    raise FetchError(
        f"{shown} is {file_kind(mode)}, not an image file", code="source_not_regular_file"
    )
