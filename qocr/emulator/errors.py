"""The errors the emulator answers with, in both APIs' words.

Codes and messages are Alibaba's (API reference seed, our digest, and Model Studio's public
error-code page). One :class:`ApiError` carries both spellings; the handler of each API picks
its own when it writes the body (see :mod:`qocr.emulator.shapes_native` and
:mod:`qocr.emulator.shapes_compatible`).
"""

from __future__ import annotations

from dataclasses import dataclass

INVALID_REQUEST = "invalid_request_error"


@dataclass(frozen=True)
class ErrorSpec:
    """One error as both APIs spell it."""

    status: int
    code: str  # native (DashScope) code
    message: str  # native message
    compatible_code: str | None
    compatible_type: str
    compatible_message: str


class ApiError(Exception):
    """A request ends with this error; raised anywhere in the pipeline, written by a handler."""

    def __init__(self, spec: ErrorSpec) -> None:
        super().__init__(spec.message)
        self.spec = spec

    @property
    def status(self) -> int:
        return self.spec.status


def _error(
    status: int,
    code: str,
    message: str,
    compatible_code: str | None,
    compatible_type: str = INVALID_REQUEST,
    compatible_message: str | None = None,
) -> ApiError:
    return ApiError(
        ErrorSpec(
            status=status,
            code=code,
            message=message,
            compatible_code=compatible_code,
            compatible_type=compatible_type,
            compatible_message=message if compatible_message is None else compatible_message,
        )
    )


def invalid_parameter(message: str, *, algo: bool = False) -> ApiError:
    """400 InvalidParameter / invalid_parameter_error.

    ``algo``: raised by the model's own checks (image size); the compatible API then prefixes
    the message with ``<400> InternalError.Algo.InvalidParameter:`` as the real service does.
    """
    compatible = f"<400> InternalError.Algo.InvalidParameter: {message}" if algo else message
    return _error(
        400, "InvalidParameter", message, "invalid_parameter_error", INVALID_REQUEST, compatible
    )


def invalid_body() -> ApiError:
    return invalid_parameter("Required body invalid, please check the request body format.")


def body_too_large(limit: int) -> ApiError:
    return _error(
        400,
        "BadRequest.TooLarge",
        f"The request body is larger than {limit} bytes.",
        "invalid_parameter_error",
    )


def missing_parameter(name: str) -> ApiError:
    return invalid_parameter(
        f"Required parameter({name}) missing or invalid, please check the request parameters."
    )


def missing_model() -> ApiError:
    return _error(
        400,
        "BadRequest.EmptyModel",
        'Required parameter "model" missing from request.',
        None,
        INVALID_REQUEST,
        "you must provide a model parameter",
    )


def missing_input() -> ApiError:
    return _error(
        400,
        "BadRequest.EmptyInput",
        "Required input parameter missing from request.",
        "invalid_parameter_error",
    )


def invalid_value(message: str) -> ApiError:
    """A compatible-mode value outside its documented range (``seed``); native: InvalidParameter."""
    return _error(400, "InvalidParameter", message, "invalid_value", INVALID_REQUEST)


def model_not_found(model: str) -> ApiError:
    return _error(
        404,
        "ModelNotFound",
        f"Model can not be found. The model {model} does not exist.",
        "model_not_found",
        INVALID_REQUEST,
        f"The model `{model}` does not exist or you do not have access to it.",
    )


def invalid_api_key() -> ApiError:
    return _error(
        401,
        "InvalidApiKey",
        "Invalid API-key provided.",
        "invalid_api_key",
        INVALID_REQUEST,
        "Incorrect API key provided. ",
    )


def request_rate_exceeded() -> ApiError:
    return _error(
        429,
        "Throttling.RateQuota",
        "Requests rate limit exceeded, please try again later.",
        "limit_requests",
        "limit_requests",
    )


def burst_rate_exceeded() -> ApiError:
    """More than RPM/60 requests in one second (the service's per-second window)."""
    message = (
        "Request rate increased too quickly. To ensure system stability, please adjust your "
        "client logic to scale requests more smoothly over time."
    )
    return _error(429, "Throttling.BurstRate", message, "limit_burst_rate", "limit_burst_rate")


def token_rate_exceeded() -> ApiError:
    return _error(
        429,
        "Throttling.AllocationQuota",
        "Allocated quota exceeded, please increase your quota limit.",
        "insufficient_quota",
        "insufficient_quota",
        "You exceeded your current quota, please check your plan and billing details.",
    )


def internal_error() -> ApiError:
    return _error(
        500,
        "InternalError",
        "An internal error has occured, please try again later or contact service support.",
        "internal_error",
        "internal_error",
    )


def service_unavailable() -> ApiError:
    return _error(
        503,
        "ServiceUnavailable",
        "The service is temporarily unavailable, please try again later.",
        "service_unavailable",
        "service_unavailable",
    )


# --- image errors --------------------------------------------------------------------------


def invalid_url() -> ApiError:
    return invalid_parameter(
        "The provided URL does not appear to be valid. Ensure it is correctly formatted."
    )


def download_failed(*, timed_out: bool) -> ApiError:
    """An image URL the service could not download (refused, 4xx/5xx, or too slow)."""
    native = (
        "Download the media resource timed out during the data inspection process."
        if timed_out
        else "Unable to download the media resource during the data inspection process."
    )
    return _error(
        400,
        "InvalidParameter.DataInspection",
        native,
        "invalid_parameter_error",
        INVALID_REQUEST,
        "Failed to download multimodal content",
    )


def missing_content_length() -> ApiError:
    return _error(
        500,
        "InternalError.Algo",
        "Missing Content-Length of multimodal url.",
        "internal_error",
        "internal_error",
    )


def wrong_content_type() -> ApiError:
    return invalid_parameter("Wrong Content-Type of multimodal url")


def data_uri_too_large(limit: int) -> ApiError:
    return invalid_parameter(f"Exceeded limit on max bytes per data-uri item : {limit}")


def file_too_large() -> ApiError:
    return invalid_parameter("Multimodal file size is too large")


def image_undecodable() -> ApiError:
    return invalid_parameter("Failed to decode the image during the data inspection.")


def image_format_unsupported() -> ApiError:
    return invalid_parameter(
        "The media format is not supported or incorrect for the data inspection."
    )


def image_too_small(width: int, height: int) -> ApiError:
    return invalid_parameter(
        "The image length and width do not meet the model restrictions. "
        f"[height:{height} or width:{width} must be larger than 10]",
        algo=True,
    )


def image_aspect_ratio(width: int, height: int) -> ApiError:
    ratio = max(width, height) / max(1, min(width, height))
    return invalid_parameter(
        "The image length and width do not meet the model restrictions. "
        f"[absolute aspect ratio must be smaller than 200, got {ratio:.1f}]",
        algo=True,
    )


def image_too_many_pixels() -> ApiError:
    return invalid_parameter("The image size is not supported for the data inspection.")
