"""The Qwen-OCR client: a sans-IO core, sync and async httpx transports, errors, retries.

Modules, one job each: ``images`` (sniff and check), ``catalog`` (models, regions, prices),
``tokens`` (estimates), ``tasks`` (built-in tasks), ``options`` (request options),
``request`` (build), ``parse`` / ``sse`` / ``stream`` (read answers), ``classify`` and
``errors`` (failures), ``retry`` (policy), ``core`` / ``client`` / ``aclient`` (transports).
"""

from qocr.qwen.aclient import AsyncQwenOCRClient
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

__all__ = [
    "MODELS",
    "TASKS",
    "APIConnectionError",
    "APITimeoutError",
    "AsyncQwenOCRClient",
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
