"""Image sniffing, limits and sources: every violation fails before any network call."""

from __future__ import annotations

import base64
from pathlib import Path

import httpx
import pytest

from qocr.qwen import ImageError, QwenOCRClient, inspect_image, to_data_url
from qocr.qwen.catalog import Api
from qocr.qwen.images import (
    MAX_ENCODED_BYTES,
    base64_size,
    decode_data_url,
    prepare_image,
    sniff_mime,
)
from tests.support.qwen_samples import API_KEY, make_heic, make_image

ELEVEN_MB = 11 * 1024 * 1024


@pytest.mark.parametrize(
    ("fmt", "mime"),
    [
        ("PNG", "image/png"),
        ("JPEG", "image/jpeg"),
        ("BMP", "image/bmp"),
        ("TIFF", "image/tiff"),
        ("WEBP", "image/webp"),
    ],
)
def test_inspect_reads_mime_and_size_of_each_pillow_format(fmt: str, mime: str) -> None:
    data = make_image(640, 480, fmt)
    assert inspect_image(data) == inspect_image(bytearray(data))
    info = inspect_image(data)
    assert (info.mime, info.width, info.height, info.size_bytes) == (mime, 640, 480, len(data))


def test_heic_size_comes_from_the_largest_ispe_box() -> None:
    # A gridded photo: 512×512 tiles, a 320×240 thumbnail, the 4032×3024 canvas.
    data = make_heic([(512, 512), (320, 240), (4032, 3024)])
    info = inspect_image(data)
    assert (info.mime, info.width, info.height) == ("image/heic", 4032, 3024)


def test_avif_shares_the_container_but_is_not_heic() -> None:
    data = make_heic([(100, 100)], brand=b"avif")
    with pytest.raises(ImageError) as caught:
        inspect_image(data)
    assert caught.value.code == "image_unsupported_format"


def test_heic_without_ispe_is_refused() -> None:
    data = make_heic([])
    with pytest.raises(ImageError, match="ispe"):
        inspect_image(data)


def test_mime_comes_from_the_bytes_not_the_file_name(tmp_path: Path) -> None:
    path = tmp_path / "scan.png"  # a JPEG in disguise
    path.write_bytes(make_image(64, 64, "JPEG"))
    prepared = prepare_image(path)
    assert prepared.url.startswith("data:image/jpeg;base64,")
    assert prepared.info is not None and prepared.info.mime == "image/jpeg"


@pytest.mark.parametrize(
    ("data", "code", "limit_words"),
    [
        (b"", "image_empty", "0 bytes"),
        (b"%PDF-1.7 not an image", "image_unsupported_format", "BMP, JPEG, PNG, TIFF, WEBP, HEIC"),
        (b"GIF89a" + b"\0" * 20, "image_unsupported_format", "GIF"),
        (b"\x89PNG\r\n\x1a\n" + b"\0" * 10, "image_unsupported_format", "unreadable"),
        (b"\0" * ELEVEN_MB, "image_too_large", "10 MB"),
        (make_image(5, 5), "image_too_small", "larger than 10 px"),
        (make_image(10, 400), "image_too_small", "larger than 10 px"),
        (make_image(3000, 10), "image_aspect_ratio", "200:1"),
        (make_image(11, 2300), "image_aspect_ratio", "200:1"),
    ],
)
def test_limit_violations_name_the_limit(data: bytes, code: str, limit_words: str) -> None:
    with pytest.raises(ImageError) as caught:
        inspect_image(data)
    assert caught.value.code == code
    assert limit_words in caught.value.message
    assert caught.value.retryable is False


def test_too_many_pixels_is_checked_from_the_header() -> None:
    # 4000×4000 = 16 M px > 15.68 M; only the PNG header is read, no pixels are decoded.
    data = make_image(4000, 4000, "PNG")
    with pytest.raises(ImageError) as caught:
        inspect_image(data)
    assert caught.value.code == "image_too_many_pixels"
    assert "15680000" in caught.value.message


def test_boundaries_are_accepted() -> None:
    assert inspect_image(make_image(11, 11)).width == 11
    assert inspect_image(make_image(2200, 11)).width == 2200  # exactly 200:1
    assert inspect_image(make_heic([(3960, 3959)])).height == 3959  # 15.68 M px minus a row


def test_size_limit_counts_the_base64_encoding() -> None:
    # The 10 MB cap applies to the encoded string: ~7.5 MB of raw bytes already exceeds it.
    raw_limit = MAX_ENCODED_BYTES * 3 // 4
    assert base64_size(raw_limit) == MAX_ENCODED_BYTES
    with pytest.raises(ImageError) as caught:
        inspect_image(b"\xff\xd8\xff" + b"\0" * raw_limit)
    assert caught.value.code == "image_too_large"


def test_data_url_round_trip() -> None:
    data = make_image(30, 20)
    url = to_data_url(data, "image/png")
    assert url == "data:image/png;base64," + base64.b64encode(data).decode()
    assert decode_data_url(url) == ("image/png", data)


def test_data_url_input_is_rechecked_and_relabelled() -> None:
    jpeg = make_image(30, 20, "JPEG")
    lying = "data:image/png;base64," + base64.b64encode(jpeg).decode()
    assert prepare_image(lying).url.startswith("data:image/jpeg;base64,")
    with pytest.raises(ImageError) as caught:
        prepare_image("data:image/png;base64,%%%")
    assert caught.value.code == "image_unsupported_source"


def test_http_urls_are_sent_as_they_are() -> None:
    url = "https://img.alicdn.com/imgextra/i2/O1CN01ktT8451iQutqReELT_!!6000000004408-0-tps-689-487.jpg"
    prepared = prepare_image(url)
    assert (prepared.url, prepared.info) == (url, None)


@pytest.mark.parametrize(
    ("source", "code"),
    [
        ("ftp://example.com/a.png", "image_unsupported_source"),
        ("/no/such/file.png", "image_not_found"),
    ],
)
def test_bad_sources(source: str, code: str) -> None:
    with pytest.raises(ImageError) as caught:
        prepare_image(source)
    assert caught.value.code == code


def test_sniff_knows_tiff_both_byte_orders() -> None:
    assert sniff_mime(b"II*\x00rest") == "image/tiff"
    assert sniff_mime(b"MM\x00*rest") == "image/tiff"
    assert sniff_mime(b"plain text") is None


@pytest.mark.parametrize(
    ("image", "code", "limit"),
    [
        (b"", "image_empty", "0 bytes"),
        (b"not an image at all", "image_unsupported_format", "supported formats"),
        (b"\xff\xd8\xff" + b"\0" * ELEVEN_MB, "image_too_large", "10 MB"),
        (make_image(5, 5), "image_too_small", "10 px"),
        (make_image(3000, 10), "image_aspect_ratio", "200:1"),
    ],
)
@pytest.mark.parametrize("api", ["compatible", "dashscope"])
def test_client_refuses_bad_images_before_any_request(
    image: bytes, code: str, limit: str, api: Api, forbidden_transport: httpx.MockTransport
) -> None:
    client = QwenOCRClient(API_KEY, api=api, transport=forbidden_transport)
    with client, pytest.raises(ImageError) as caught:
        client.recognize(image, model="qwen-vl-ocr-latest")
    assert caught.value.code == code
    assert limit in str(caught.value)
