"""Image sources and limits → the service's errors (no network: data URLs and placeholders)."""

from __future__ import annotations

import asyncio
import hashlib
import io
from collections.abc import Awaitable, Callable
from typing import TypeVar

import aiohttp
import pytest
from PIL import Image

from qocr.emulator.errors import ApiError
from qocr.emulator.images import ImageLoader, LoadedImage, is_loopback_host
from qocr.emulator.placeholder import render_placeholder
from qocr.qwen.images import to_data_url

T = TypeVar("T")


def png(width: int, height: int) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), "white").save(buffer, format="PNG")
    return buffer.getvalue()


def data_url(data: bytes) -> str:
    return to_data_url(data, "image/png")


def with_loader(use: Callable[[ImageLoader], Awaitable[T]]) -> T:
    async def run() -> T:
        async with aiohttp.ClientSession() as session:
            return await use(ImageLoader(session, fetch_timeout_s=1.0))

    return asyncio.run(run())


def load(url: str) -> LoadedImage:
    return with_loader(lambda loader: loader.load(url))


def load_error(url: str) -> ApiError:
    with pytest.raises(ApiError) as caught:
        load(url)
    return caught.value


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("localhost", True),
        ("LOCALHOST", True),
        ("::1", True),
        ("[::1]", True),
        ("10.0.0.1", False),
        ("example.com", False),
        ("", False),
        (None, False),
    ],
)
def test_loopback_hosts(host: str | None, loopback: bool) -> None:
    assert is_loopback_host(host) is loopback


def test_data_url_image_is_measured_and_keyed_by_sha256() -> None:
    data = png(120, 40)
    image = load(data_url(data))
    assert (image.width, image.height, image.mime) == (120, 40, "image/png")
    assert image.stats_key == hashlib.sha256(data).hexdigest()
    assert image.data == data and not image.placeholder


def test_public_url_gets_the_placeholder_keyed_by_url() -> None:
    url = "https://img.alicdn.com/imgextra/i2/O1CN01ktT8451iQutqReELT_!!6000000004408-0-tps-689-487.jpg"
    image = load(url)
    assert image.placeholder and image.stats_key == url
    assert (image.width, image.height) == (689, 487)
    assert image.data == render_placeholder(url)


INVALID = "The provided URL does not appear to be valid. Ensure it is correctly formatted."


@pytest.mark.parametrize(
    "url",
    [
        "file:///tmp/a.png",
        "oss://bucket/a.png",
        "/tmp/a.png",
        "ftp://x/a.png",
        "http://",
        "data:image/png,abc",
    ],
)
def test_unusable_urls(url: str) -> None:
    error = load_error(url)
    assert (error.status, error.spec.code, error.spec.message) == (400, "InvalidParameter", INVALID)


def test_bad_base64_is_an_invalid_url() -> None:
    assert load_error("data:image/png;base64,@@@").spec.message == INVALID


ALGO = "<400> InternalError.Algo.InvalidParameter: "


@pytest.mark.parametrize(
    ("data", "message", "algo"),
    [
        (
            png(5, 40),
            "The image length and width do not meet the model restrictions. "
            "[height:40 or width:5 must be larger than 10]",
            True,
        ),
        (
            png(4020, 20),
            "The image length and width do not meet the model restrictions. "
            "[absolute aspect ratio must be smaller than 200, got 201.0]",
            True,
        ),
        (
            b"GIF89a" + b"\0" * 20,
            "The media format is not supported or incorrect for the data inspection.",
            False,
        ),
        (b"", "Failed to decode the image during the data inspection.", False),
    ],
)
def test_image_limits_give_the_service_errors(data: bytes, message: str, algo: bool) -> None:
    error = load_error(data_url(data))
    assert error.status == 400 and error.spec.code == "InvalidParameter"
    assert error.spec.message == message
    assert error.spec.compatible_code == "invalid_parameter_error"
    assert error.spec.compatible_message == (ALGO + message if algo else message)


def test_data_uri_over_10_mib() -> None:
    url = "data:image/png;base64," + "A" * (10 * 1024 * 1024 + 4)
    error = load_error(url)
    assert error.spec.message == "Exceeded limit on max bytes per data-uri item : 10485760"


def test_too_many_pixels() -> None:
    error = load_error(data_url(png(4000, 4000)))
    assert error.spec.message == "The image size is not supported for the data inspection."
