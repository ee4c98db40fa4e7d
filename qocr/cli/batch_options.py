"""The request options ``qocr submit`` and ``qocr run`` share, and how they become a request."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from qocr.cli.sampling_options import SAMPLING_OPTIONS, sampling_values
from qocr.errors import QocrError
from qocr.qwen.options import RecognizeOptions
from qocr.qwen.tasks import TASKS
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
        click.option("--json", "as_json", is_flag=True, help="Print JSON."),
    ]
    for decorator in reversed(decorators):
        command = decorator(command)
    return command


def build_request(settings: Settings, params: dict[str, Any]) -> BatchRequest:
    """Validate the options into a request; bad values raise a clear :class:`QocrError`."""
    schema = _read_schema(params.get("schema_file"))
    task = params.get("task")
    if schema is not None and task is None:
        task = "key_information_extraction"
    options = RecognizeOptions(
        model=params.get("model") or settings.model,
        task=task,
        prompt=params.get("prompt"),
        result_schema=schema,
        min_pixels=params.get("min_pixels"),
        max_pixels=params.get("max_pixels"),
        enable_rotate=params.get("rotate"),
        max_tokens=params.get("max_tokens"),
        stream=bool(params.get("stream")),
        granted_max_tokens=settings.granted_max_tokens,
        **sampling_values(params),
    )
    return BatchRequest(
        sources=list(params["sources"]),
        options=options,
        api=params.get("api") or settings.api,
        name=params.get("name"),
        s3_mode=params.get("s3_mode") or settings.s3_mode,
    )


def _read_schema(path: Path | None) -> dict[str, Any] | None:
    if path is None:
        return None
    try:
        schema = json.loads(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise QocrError(f"--schema {path}: {exc.strerror}", code="schema_unreadable") from None
    except json.JSONDecodeError as exc:
        raise QocrError(
            f"--schema {path}: invalid JSON at line {exc.lineno}: {exc.msg}",
            code="schema_invalid",
        ) from None
    if not isinstance(schema, dict) or not schema:
        raise QocrError(f"--schema {path}: must be a non-empty JSON object", code="schema_invalid")
    return schema
