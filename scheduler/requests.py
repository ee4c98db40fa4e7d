"""A submit's options as plain values (Python keywords, a broker message's JSON) → a request.

One set of names for every producer: the Python API (``Client.submit(sources, **options)``),
the ``qocr.submit`` broker task and ``qocr submit`` (whose flags are the same names with
dashes). Values are checked here for their kind and by :class:`RecognizeOptions` for their
range, so a bad value is refused the same way whoever sent it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, get_args
from urllib.parse import urlsplit

from qocr.errors import QocrError
from qocr.qwen.batch_api import unsupported_reason
from qocr.qwen.options import RecognizeOptions
from qocr.scheduler.cache_policy import policy_from_values
from qocr.scheduler.document_options import document_options
from qocr.scheduler.schema_file import SchemaError, check_schema
from qocr.scheduler.submit import BatchRequest
from qocr.settings import Api, S3Mode, Settings

# Submit option → RecognizeOptions field, for the options that are the model's request.
REQUEST_OPTIONS = {
    "model": "model",
    "task": "task",
    "prompt": "prompt",
    "schema": "result_schema",
    "min_pixels": "min_pixels",
    "max_pixels": "max_pixels",
    "rotate": "enable_rotate",
    "max_tokens": "max_tokens",
    "stream": "stream",
    "temperature": "temperature",
    "top_p": "top_p",
    "top_k": "top_k",
    "repetition_penalty": "repetition_penalty",
    "presence_penalty": "presence_penalty",
    "seed": "seed",
    "stop": "stop",
}
# The options about the batch rather than the model (the cache's: scheduler.cache_policy).
BATCH_OPTIONS = (
    "name",
    "api",
    "s3_mode",
    "notify",
    "cache",
    "cache_max_age",
    "cache_urls",
    "mode",
    "pages",
    "max_pages",
    "dpi",
)
MODES = ("realtime", "batch")
OPTION_NAMES = frozenset((*REQUEST_OPTIONS, *BATCH_OPTIONS))
NOTIFY_MAX_CHARS = 2048
NAME_MAX_CHARS = 1000


class RequestError(QocrError):
    """A submit's sources or options are not what a submit takes (names, kinds)."""

    code = "request_invalid"


def request_from_options(
    settings: Settings,
    sources: Sequence[str],
    options: Mapping[str, Any],
    *,
    local_sources: bool = True,
) -> BatchRequest:
    """The batch request for ``sources`` and ``options``; unset (None) options take the
    settings' defaults. ``local_sources=False`` (a producer on another host) refuses local
    paths and ``@manifest`` files: they would name files on the worker's disk."""
    unknown = sorted(set(options) - OPTION_NAMES)
    if unknown:
        known = ", ".join(sorted(OPTION_NAMES))
        raise RequestError(f"unknown option(s) {', '.join(unknown)} (known: {known})")
    given = {key: value for key, value in options.items() if value is not None}
    checked_sources = check_sources(sources, local_sources)
    schema = given.get("schema")
    if schema is not None:
        try:
            check_schema(schema)
        except SchemaError as exc:
            raise SchemaError(f"schema: {exc.message}", code=exc.code) from None
    fields = {REQUEST_OPTIONS[key]: value for key, value in given.items() if key in REQUEST_OPTIONS}
    fields.setdefault("model", settings.model)
    if schema is not None:
        fields.setdefault("task", "key_information_extraction")
    if isinstance(fields.get("stop"), list):
        fields["stop"] = tuple(fields["stop"])
    fields["stream"] = bool(fields.get("stream", False))
    request_options = RecognizeOptions(granted_max_tokens=settings.granted_max_tokens, **fields)
    api = _choice("api", given.get("api") or settings.api, get_args(Api))
    mode = _choice("mode", given.get("mode") or "realtime", MODES)
    if mode == "batch":
        check_batch_mode(api, settings.region, request_options)
    return BatchRequest(
        sources=checked_sources,
        options=request_options,
        api=api,
        name=_name(given.get("name")),
        s3_mode=_choice("s3_mode", given.get("s3_mode") or settings.s3_mode, get_args(S3Mode)),
        notify_url=check_notify_url(given["notify"]) if "notify" in given else None,
        cache=policy_from_values(
            request_options.model,
            given.get("cache"),
            given.get("cache_max_age"),
            given.get("cache_urls"),
        ),
        documents=document_options(given.get("pages"), given.get("max_pages"), given.get("dpi")),
        mode=mode,
    )


def check_batch_mode(api: str, region: str, options: RecognizeOptions) -> None:
    """Refuse batch mode where the provider's Batch API cannot serve the request."""
    reason = unsupported_reason(api, region, options.model, options.stream)
    if reason is not None:
        raise RequestError(f"--mode batch: {reason}", code="batch_mode_unsupported")


def check_sources(sources: Any, local_sources: bool = True) -> list[str]:
    """A non-empty list of non-empty strings; remote producers may send URLs and s3:// only."""
    if isinstance(sources, str) or not isinstance(sources, Sequence) or not sources:
        raise RequestError("sources must be a non-empty list of strings")
    checked = []
    for position, source in enumerate(sources, start=1):
        if not isinstance(source, str) or not source.strip():
            raise RequestError(f"source #{position} is not a non-empty string")
        source = source.strip()
        if not local_sources and not source.startswith(("http://", "https://", "s3://")):
            raise RequestError(
                f"source #{position} ({source[:200]}): only http(s):// and s3:// sources are "
                "taken from the broker (a path names a file on the worker's disk)",
                code="source_not_allowed",
            )
        checked.append(source)
    return checked


def check_notify_url(url: Any) -> str:
    """An absolute http(s) URL of reasonable length, to POST the batch's end to."""
    if not isinstance(url, str) or len(url) > NOTIFY_MAX_CHARS or any(c.isspace() for c in url):
        raise RequestError(
            f"notify must be an http(s) URL of at most {NOTIFY_MAX_CHARS} characters",
            code="notify_invalid",
        )
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise RequestError("notify must be an http:// or https:// URL", code="notify_invalid")
    return url


def _choice(name: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise RequestError(f"{name} must be one of {', '.join(allowed)}")
    return str(value)


def _name(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > NAME_MAX_CHARS:
        raise RequestError(f"name must be a string of at most {NAME_MAX_CHARS} characters")
    return value
