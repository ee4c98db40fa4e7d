"""A truncated image (valid header, cut body) is refused before any call (issue 13, point 7):
the service would decode what it can and charge for it."""

from __future__ import annotations

import io
import random

import httpx
import pytest
from PIL import Image

from qocr.qwen import ImageError, QwenOCRClient
from qocr.qwen.images import inspect_image, prepare_image
from tests.support.qwen_samples import API_KEY


def photo(fmt: str, size: tuple[int, int] = (320, 240), **save: object) -> bytes:
    """Noisy pixels, so the body is large and the header a small part of it."""
    rng = random.Random(7)
    image = Image.frombytes(
        "RGB", size, bytes(rng.randrange(256) for _ in range(size[0] * size[1] * 3))
    )
    buffer = io.BytesIO()
    image.save(buffer, fmt, **save)
    return buffer.getvalue()


PNG = photo("PNG")
JPEG = photo("JPEG", quality=90)
PROGRESSIVE_JPEG = photo("JPEG", quality=90, progressive=True)
WEBP = photo("WEBP", quality=80)


@pytest.mark.parametrize(
    "data",
    [
        PNG[: len(PNG) // 2],
        PNG[:-12],  # every byte but the IEND chunk
        PNG[:-1],
        JPEG[: len(JPEG) // 2],
        JPEG[:-2],  # every byte but the EOI marker
        JPEG[: len(JPEG) // 2] + b"\0" * 64,  # cut, then zero-padded
        PROGRESSIVE_JPEG[: len(PROGRESSIVE_JPEG) * 2 // 3],
    ],
    ids=[
        "png-half",
        "png-no-iend",
        "png-last-byte",
        "jpeg-half",
        "jpeg-no-eoi",
        "jpeg-padded",
        "jpeg-progressive",
    ],
)
def test_a_cut_image_is_refused_as_truncated(data: bytes) -> None:
    inspect_image(data)  # the header alone is valid: only the prepare step can tell
    with pytest.raises(ImageError) as caught:
        prepare_image(data)
    assert caught.value.code == "image_truncated"
    assert "truncated" in caught.value.message
    assert caught.value.retryable is False


@pytest.mark.parametrize(
    "data",
    [
        PNG,
        JPEG,
        PROGRESSIVE_JPEG,
        WEBP,
        JPEG + b"\0" * 100,  # zero padding after EOI (some scanners write it)
        JPEG + b"SEFH\x00\x00\x00\x01trailer" * 8,  # a phone's metadata trailer after EOI
        PNG + b"\0" * 16,  # bytes after IEND
    ],
    ids=[
        "png",
        "jpeg",
        "jpeg-progressive",
        "webp",
        "jpeg-zero-padded",
        "jpeg-trailer",
        "png-trailer",
    ],
)
def test_complete_images_pass(data: bytes) -> None:
    prepared = prepare_image(data)
    assert prepared.info is not None and prepared.info.size_bytes == len(data)


def test_the_client_sends_nothing_for_a_truncated_image(
    forbidden_transport: httpx.MockTransport,
) -> None:
    client = QwenOCRClient(API_KEY, transport=forbidden_transport)
    with pytest.raises(ImageError) as caught:
        client.recognize(PNG[:-12], model="qwen-vl-ocr-latest")
    assert caught.value.code == "image_truncated"
