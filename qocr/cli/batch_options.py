"""The request options ``qocr submit`` and ``qocr run`` share, and how they become a request."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from qocr.cli.sampling_options import SAMPLING_OPTIONS, sampling_values
from qocr.errors import QocrError
from qocr.qwen.tasks import TASKS
from qocr.scheduler.requests import request_from_options
from qocr.scheduler.schema_file import SchemaError, read_schema_file
from qocr.scheduler.submit import BatchRequest
from qocr.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])


def batch_options(command: F) -> F:
    """Decorate a command with the batch options (the last one listed is outermost)."""
    decorators = [
        click.argument("sources", nargs=-1, required=True),
        click.option("--name", help="A name for the batch (default: from the sources)."),
        click.option(
            "--api",
            type=click.Choice(["compatible", "dashscope"]),
            help="Which API to call (default: QOCR_API).",
        ),
        click.option("--model", help="Model name (default: QOCR_MODEL)."),
        click.option("--task", type=click.Choice(sorted(TASKS)), help="A built-in OCR task."),
        click.option("--prompt", help="Your own instruction instead of a built-in task."),
        click.option(
            "--schema",
            "schema_file",
            type=click.Path(dir_okay=False, path_type=Path),
            help="JSON file: the result_schema of key_information_extraction.",
        ),
        click.option("--min-pixels", type=int, help="Upscale images below this many pixels."),
        click.option("--max-pixels", type=int, help="Downscale images above this many pixels."),
        click.option("--rotate/--no-rotate", default=None, help="Let the model fix rotation."),
        click.option(
            "--max-tokens",
            type=int,
            help="Cap on output tokens per image (at most the model's maximum: 4096 for "
            "qwen-vl-ocr and its dated snapshots, 8192 for -latest; QOCR_GRANTED_MAX_TOKENS "
            "raises it for an account granted more).",
        ),
        *SAMPLING_OPTIONS,
        click.option("--stream/--no-stream", default=False, help="Stream each answer."),
        click.option(
            "--s3-mode",
            type=click.Choice(["inline", "presign"]),
            help="Send S3 images inline (base64) or as presigned URLs (default: QOCR_S3_MODE).",
        ),
        click.option(
            "--notify",
            metavar="URL",
            help="POST the batch's status document to URL when it ends, signed with "
            "QOCR_WEBHOOK_SECRET (docs/webhooks.md).",
        ),
        click.option(
            "--pages",
            metavar="LIST",
            help="Pages of each PDF or TIFF to read, e.g. 1-3,7 or 2- (default: all).",
        ),
        click.option(
            "--max-pages",
            type=int,
            help="A document with more pages to read fails with document_too_many_pages, "
            "before any page is called (default: 3000).",
        ),
        click.option(
            "--dpi",
            type=float,
            help="Render document pages at this resolution (default: as large as "
            "--max-pixels lets the model see).",
        ),
        click.option(
            "--cache/--no-cache",
            default=None,
            help="Reuse a paid result of the same image and request instead of paying again "
            "(default: on).",
        ),
        click.option(
            "--cache-max-age",
            metavar="DURATION",
            help="Reuse only results at most this old, e.g. 7d, 12h (default: any age; "
            "30d for -latest models, which change without notice).",
        ),
        click.option(
            "--cache-urls",
            is_flag=True,
            default=None,
            help="Reuse results for URL sources too, keyed by the exact URL (and its "
            "ETag/Last-Modified): off by default, a URL's content may change.",
        ),
        click.option("--json", "as_json", is_flag=True, help="Print JSON."),
    ]
    for decorator in reversed(decorators):
        command = decorator(command)
    return command


def build_request(settings: Settings, params: dict[str, Any]) -> BatchRequest:
    """Validate the options into a request; bad values raise a clear :class:`QocrError`.

    The rules are the Python API's and the broker's (:func:`request_from_options`), so a
    value is refused the same way whoever sent it.
    """
    return request_from_options(settings, list(params["sources"]), request_options(params))


def request_options(params: dict[str, Any]) -> dict[str, Any]:
    """The submit options (``Client.submit`` keywords) the command line was given."""
    return {
        "name": params.get("name"),
        "api": params.get("api"),
        "model": params.get("model") or None,
        "task": params.get("task"),
        "prompt": params.get("prompt"),
        "schema": _read_schema(params.get("schema_file")),
        "min_pixels": params.get("min_pixels"),
        "max_pixels": params.get("max_pixels"),
        "rotate": params.get("rotate"),
        "max_tokens": params.get("max_tokens"),
        "stream": bool(params.get("stream")),
        **sampling_values(params),
        "s3_mode": params.get("s3_mode"),
        "notify": params.get("notify"),
        "pages": params.get("pages"),
        "max_pages": params.get("max_pages"),
        "dpi": params.get("dpi"),
        "cache": params.get("cache"),
        "cache_max_age": params.get("cache_max_age"),
        "cache_urls": params.get("cache_urls"),
    }


def _read_schema(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    try:
        return read_schema_file(path)
    except SchemaError as exc:
        raise QocrError(f"--schema {path}: {exc.message}", code=exc.code) from None
