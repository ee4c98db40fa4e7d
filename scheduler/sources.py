"""Expand what a user names (URLs, files, folders, S3 objects and prefixes, manifests) into items.

Everything here is checked before a batch exists: a source that can never work (a missing
local file, an unknown scheme, an unreadable manifest, a missing S3 bucket) raises a
:class:`SourceError` naming its place, and the caller keeps nothing. Problems only the
worker can see (a missing S3 key, an unreachable URL, a file that is not an image) end as
failed items instead.
"""

from __future__ import annotations

import csv
import errno
import io
import json
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from qocr.errors import QocrError
from qocr.models.records import SourceRow
from qocr.models.text_caps import cap
from qocr.s3 import parse_s3_uri

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client

IMAGE_SUFFIXES = frozenset(
    {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".heic", ".heif"}
)
# Documents whose pages a worker makes items of (worker/documents.py); TIFFs are documents
# too, whatever their page count.
DOCUMENT_SUFFIXES = frozenset({".pdf", ".tif", ".tiff"})
# What a folder or an S3 prefix is searched for.
SOURCE_SUFFIXES = IMAGE_SUFFIXES | DOCUMENT_SUFFIXES
S3_PAGE_SIZE = 1000
# A source or path in a message is cut to this: a manifest line can be a megabyte long.
SHOWN_CHARS = 200
# Sources sent to the provider as they are.
URL_SCHEMES = ("http://", "https://")


class SourceError(QocrError):
    """A source that cannot become an item; ``where`` names the argument or manifest line."""

    code = "source_invalid"

    def __init__(self, message: str, *, code: str, where: str) -> None:
        super().__init__(f"{where}: {message}", code=code)
        self.where = where


S3ClientFactory = Callable[[], "S3Client"]


class SourceExpander:
    """Turns source arguments into :class:`SourceRow` items, lazily (a manifest can be huge)."""

    def __init__(self, s3_client: S3ClientFactory) -> None:
        self._s3_factory = s3_client
        self._s3: S3Client | None = None
        self._checked_buckets: set[str] = set()

    @property
    def s3(self) -> S3Client:
        if self._s3 is None:
            self._s3 = self._s3_factory()
        return self._s3

    def expand(self, sources: list[str]) -> Iterator[SourceRow]:
        for position, source in enumerate(sources, start=1):
            where = f"source #{position} ({cap(source, SHOWN_CHARS)})"
            yield from self._expand_one(source, where=where)

    def _expand_one(
        self, source: str, where: str, in_manifest: bool = False
    ) -> Iterator[SourceRow]:
        source = source.strip()
        if source.startswith("@") and not in_manifest:
            yield from self._manifest(Path(source[1:]))
        elif source.startswith(URL_SCHEMES):
            yield SourceRow(source=source)
        elif source.startswith("s3://"):
            yield from self._s3_source(source, where)
        elif "://" in source:
            scheme = source.split("://", 1)[0]
            raise SourceError(
                f"unknown scheme {scheme}:// (use http(s)://, s3:// or a local path)",
                code="source_unknown_scheme",
                where=where,
            )
        else:
            yield from self._local(Path(source), where)

    def _local(self, path: Path, where: str) -> Iterator[SourceRow]:
        mode = _mode(path, where)
        if stat.S_ISDIR(mode):
            # is_file() leaves FIFOs, devices and sockets out of a folder's images and PDFs.
            for found in sorted(path.rglob("*")):
                if found.suffix.lower() in SOURCE_SUFFIXES and found.is_file():
                    yield _local_row(found)
            return
        if not stat.S_ISREG(mode):
            # Reading a FIFO blocks until someone writes to it; a device never ends.
            raise SourceError(
                f"{cap(str(path), SHOWN_CHARS)} is {file_kind(mode)}, not an image file",
                code="source_not_regular_file",
                where=where,
            )
        # An explicitly named file is taken whatever its name says: the worker reads its
        # bytes, and a non-image ends as a failed item with the reason.
        yield _local_row(path)

    def _s3_source(self, uri: str, where: str) -> Iterator[SourceRow]:
        try:
            location = parse_s3_uri(uri)
        except ValueError as exc:
            raise SourceError(str(exc), code="source_invalid", where=where) from None
        self._check_bucket(location.bucket, where)
        if not location.is_prefix:
            # Not checked key by key (a manifest may list a million): a missing key fails
            # its item at the worker.
            yield SourceRow(source=uri)
            return
        paginator = self.s3.get_paginator("list_objects_v2")
        pages = paginator.paginate(
            Bucket=location.bucket,
            Prefix=location.key,
            PaginationConfig={"PageSize": S3_PAGE_SIZE},
        )
        for page in pages:
            for entry in page.get("Contents", []):
                key = entry["Key"]
                if Path(key).suffix.lower() in SOURCE_SUFFIXES:
                    yield SourceRow(
                        source=f"s3://{location.bucket}/{key}",
                        fingerprint=entry.get("ETag", "").strip('"') or None,
                    )

    def _check_bucket(self, bucket: str, where: str) -> None:
        if bucket in self._checked_buckets:
            return
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            self.s3.head_bucket(Bucket=bucket)
        except ClientError as exc:
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
            if status == 404:
                raise SourceError(
                    f"no such S3 bucket: {bucket}", code="source_bucket_not_found", where=where
                ) from None
            raise SourceError(
                f"S3 bucket {bucket} is not readable (HTTP {status})",
                code="source_access_denied",
                where=where,
            ) from None
        except BotoCoreError as exc:
            raise SourceError(
                f"S3 is unreachable: {type(exc).__name__}", code="source_unreachable", where=where
            ) from None
        self._checked_buckets.add(bucket)

    def _manifest(self, path: Path) -> Iterator[SourceRow]:
        try:
            # utf-8-sig: spreadsheet programs and Windows editors start the file with a BOM.
            handle = path.open(encoding="utf-8-sig", newline="")
        except OSError as exc:
            raise SourceError(
                f"cannot read manifest: {exc.strerror}",
                code="manifest_unreadable",
                where=f"@{cap(str(path), SHOWN_CHARS)}",
            ) from None
        with handle:
            suffix = path.suffix.lower()
            if suffix == ".csv":
                lines = _csv_sources(handle, path)
            elif suffix in (".jsonl", ".ndjson"):
                lines = _jsonl_sources(handle, path)
            else:
                lines = _plain_sources(handle)
            try:
                for line_number, source in lines:
                    url = source.strip()
                    # What _expand_one does for a URL, inline: a million-line manifest of
                    # URLs is ~1 s faster without a generator and a `where` per line.
                    if url.startswith(URL_SCHEMES):
                        yield SourceRow(source=url)
                        continue
                    yield from self._expand_one(
                        source, where=f"{path}:{line_number}", in_manifest=True
                    )
            except UnicodeDecodeError:
                raise SourceError(
                    "not UTF-8 text", code="manifest_unreadable", where=f"@{path}"
                ) from None


def _mode(path: Path, where: str) -> int:
    """The file's type and mode bits, or a :class:`SourceError` saying why there are none."""
    shown = cap(str(path), SHOWN_CHARS)
    try:
        return path.stat().st_mode
    except (FileNotFoundError, NotADirectoryError):
        raise SourceError(f"no such file: {shown}", code="source_not_found", where=where) from None
    except ValueError:  # a NUL byte: no file can have that name
        raise SourceError(f"not a file name: {shown}", code="source_invalid", where=where) from None
    except OSError as exc:
        if exc.errno == errno.ENAMETOOLONG:
            message = f"path too long ({len(str(path))} characters): {shown}"
            raise SourceError(message, code="source_invalid", where=where) from None
        raise SourceError(
            f"cannot read {shown}: {exc.strerror}", code="source_unreadable", where=where
        ) from None


def file_kind(mode: int) -> str:
    """What a file that is not a regular file is, for a message: "a FIFO (named pipe)"."""
    return next((name for test, name in _KINDS if test(mode)), "a special file")


_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)


def _local_row(path: Path) -> SourceRow:
    status = path.stat()
    return SourceRow(
        source=str(path.resolve()), fingerprint=f"{status.st_size}-{status.st_mtime_ns}"
    )


def _plain_sources(handle: io.TextIOBase) -> Iterator[tuple[int, str]]:
    for line_number, line in enumerate(handle, start=1):
        text = line.strip()
        if text and not text.startswith("#"):
            yield line_number, text


def _csv_sources(handle: io.TextIOBase, path: Path) -> Iterator[tuple[int, str]]:
    reader = csv.DictReader(handle)
    try:
        if reader.fieldnames is None or "source" not in reader.fieldnames:
            raise SourceError(
                "a CSV manifest needs a 'source' column",
                code="manifest_invalid",
                where=f"@{path}:1",
            )
        for row in reader:
            value = (row.get("source") or "").strip()
            if value:
                yield reader.line_num, value
    except csv.Error as exc:  # a field over csv's 128 KB limit, a NUL byte
        raise SourceError(
            f"unreadable CSV: {exc}",
            code="manifest_invalid",
            where=f"{path}:{reader.reader.line_num}",  # DictReader.line_num lags on errors
        ) from None


def _jsonl_sources(handle: io.TextIOBase, path: Path) -> Iterator[tuple[int, str]]:
    for line_number, line in enumerate(handle, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as exc:
            raise SourceError(
                f"invalid JSON: {exc.msg}", code="manifest_invalid", where=f"{path}:{line_number}"
            ) from None
        except RecursionError:
            raise SourceError(
                "JSON nested too deeply", code="manifest_invalid", where=f"{path}:{line_number}"
            ) from None
        source = record.get("source") if isinstance(record, dict) else None
        if not isinstance(source, str) or not source.strip():
            raise SourceError(
                "no 'source' string in this line",
                code="manifest_invalid",
                where=f"{path}:{line_number}",
            )
        yield line_number, source
