"""The Qwen-OCR client: a sans-IO core, an httpx transport, errors, retries.

Modules, one job each: ``images`` (sniff and check), ``catalog`` (models, regions, prices),
``tokens`` (estimates), ``tasks`` (built-in tasks), ``options`` (request options),
``request`` (build), ``parse`` / ``sse`` / ``stream`` (read answers), ``classify`` and
``errors`` (failures), ``caps`` / ``budget`` / ``watchdog`` (what one call may take: bytes,
characters, time), ``retry`` (policy), ``core`` / ``client`` (transport).
"""

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from qocr.qwen.catalog import MODELS, ModelSpec, model_spec, price
    from qocr.qwen.client import QwenOCRClient
    from qocr.qwen.core import Timeouts
    from qocr.qwen.errors import (
        APIConnectionError,
        APITimeoutError,
        AuthenticationError,
        ImageError,
        InvalidRequestError,
        ModelNotFoundError,
        OptionsError,
        PermissionDeniedError,
        ProtocolError,
        QuotaExceededError,
        QwenError,
        RateLimitError,
        ResponseTooLargeError,
        ServerError,
    )
    from qocr.qwen.images import ImageInfo, inspect_image, to_data_url
    from qocr.qwen.options import RecognizeOptions
    from qocr.qwen.result import OCRResult, Usage, WordInfo
    from qocr.qwen.retry import (
        async_retry_policy,
        backoff_seconds,
        parse_retry_after,
        retry_policy,
        should_retry,
    )
    from qocr.qwen.tasks import TASKS, Task
    from qocr.qwen.tokens import estimate_request_tokens, image_tokens


# Names are imported on first use (PEP 562): `qocr status` needs the catalog, not httpx.
_EXPORTS: dict[str, str] = {
    "APIConnectionError": "qocr.qwen.errors",
    "APITimeoutError": "qocr.qwen.errors",
    "AuthenticationError": "qocr.qwen.errors",
    "ImageError": "qocr.qwen.errors",
    "ImageInfo": "qocr.qwen.images",
    "InvalidRequestError": "qocr.qwen.errors",
    "MODELS": "qocr.qwen.catalog",
    "ModelNotFoundError": "qocr.qwen.errors",
    "ModelSpec": "qocr.qwen.catalog",
    "OCRResult": "qocr.qwen.result",
    "OptionsError": "qocr.qwen.errors",
    "PermissionDeniedError": "qocr.qwen.errors",
    "ProtocolError": "qocr.qwen.errors",
    "QuotaExceededError": "qocr.qwen.errors",
    "ResponseTooLargeError": "qocr.qwen.errors",
    "QwenError": "qocr.qwen.errors",
    "QwenOCRClient": "qocr.qwen.client",
    "RateLimitError": "qocr.qwen.errors",
    "RecognizeOptions": "qocr.qwen.options",
    "ServerError": "qocr.qwen.errors",
    "TASKS": "qocr.qwen.tasks",
    "Task": "qocr.qwen.tasks",
    "Timeouts": "qocr.qwen.core",
    "Usage": "qocr.qwen.result",
    "WordInfo": "qocr.qwen.result",
    "async_retry_policy": "qocr.qwen.retry",
    "backoff_seconds": "qocr.qwen.retry",
    "estimate_request_tokens": "qocr.qwen.tokens",
    "image_tokens": "qocr.qwen.tokens",
    "inspect_image": "qocr.qwen.images",
    "model_spec": "qocr.qwen.catalog",
    "parse_retry_after": "qocr.qwen.retry",
    "price": "qocr.qwen.catalog",
    "retry_policy": "qocr.qwen.retry",
    "should_retry": "qocr.qwen.retry",
    "to_data_url": "qocr.qwen.images",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'qocr.qwen' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


__all__ = [
    "MODELS",
    "TASKS",
    "APIConnectionError",
    "APITimeoutError",
    "AuthenticationError",
    "ImageError",
    "ImageInfo",
    "InvalidRequestError",
    "ModelNotFoundError",
    "ModelSpec",
    "OCRResult",
    "OptionsError",
    "PermissionDeniedError",
    "ProtocolError",
    "QuotaExceededError",
    "QwenError",
    "QwenOCRClient",
    "RateLimitError",
    "RecognizeOptions",
    "ResponseTooLargeError",
    "ServerError",
    "Task",
    "Timeouts",
    "Usage",
    "WordInfo",
    "async_retry_policy",
    "backoff_seconds",
    "estimate_request_tokens",
    "image_tokens",
    "inspect_image",
    "model_spec",
    "parse_retry_after",
    "price",
    "retry_policy",
    "should_retry",
    "to_data_url",
]
