"""Documents as pages: the kind from the bytes, the render scale, the encoding, the codes of
documents that cannot be read (real PDFium and Pillow on small files)."""

from __future__ import annotations

import io
import random
from pathlib import Path

import pytest
from PIL import Image

from qocr.qwen.images import MAX_PIXELS, MIN_SIDE_EXCLUSIVE_PX, inspect_image
from qocr.qwen.options import RecognizeOptions
from qocr.worker.render import (
    DocumentError,
    DocumentKind,
    RenderLimits,
    encode_smallest,
    open_document,
    sniff_document,
)
from tests.support.documents import (
    corrupt_pdf_bytes,
    empty_pdf_bytes,
    encrypted_pdf_bytes,
    pdf_bytes,
    tiff_bytes,
    write,
)
from tests.support.images import png_bytes


@pytest.mark.parametrize(
    ("head", "kind"),
    [
        (b"%PDF-1.7\n...", DocumentKind.PDF),
        (b"\xef\xbb\xbfjunk before the header %PDF-1.4\n", DocumentKind.PDF),
        (b"II*\x00\x08\x00\x00\x00", DocumentKind.TIFF),
        (b"MM\x00*\x00\x00\x00\x08", DocumentKind.TIFF),
        (b"II+\x00\x08\x00\x00\x00", DocumentKind.TIFF),
        (b"\x89PNG\r\n\x1a\n", None),
        (b"\xff\xd8\xff\xe0", None),
        (b"", None),
        (b"%PDX-1.4", None),
    ],
)
def test_the_kind_is_sniffed_from_the_bytes(head: bytes, kind: DocumentKind | None) -> None:
    assert sniff_document(head) == kind


def test_a_page_is_drawn_as_large_as_the_pixel_cap_allows() -> None:
    limits = RenderLimits(max_pixels=1_000_000)
    scale = limits.scale(612, 792, 72)  # a letter page in points
    assert 612 * scale * 792 * scale == pytest.approx(1_000_000)


def test_a_lower_dpi_draws_smaller_and_a_higher_one_never_above_the_cap() -> None:
    assert RenderLimits(max_pixels=10_000_000, dpi=100).scale(612, 792, 72) == pytest.approx(
        100 / 72
    )
    capped = RenderLimits(max_pixels=1_000_000, dpi=600).scale(612, 792, 72)
    assert 612 * capped * 792 * capped == pytest.approx(1_000_000)
    # Without a resolution of its own (a TIFF without dpi), --dpi cannot apply.
    assert RenderLimits(max_pixels=1_000_000, dpi=10).scale(1000, 1000, None) == 1.0


def test_a_thin_page_keeps_each_side_above_the_models_minimum() -> None:
    scale = RenderLimits(max_pixels=20_000).scale(5000, 2, 72)
    assert 2 * scale > MIN_SIDE_EXCLUSIVE_PX


def test_the_cap_is_the_batchs_max_pixels_within_one_images_limit() -> None:
    model = "qwen-vl-ocr-latest"
    assert RenderLimits.for_request(RecognizeOptions(model=model, max_pixels=500_000), None) == (
        RenderLimits(max_pixels=500_000)
    )
    default = RenderLimits.for_request(RecognizeOptions(model=model), 200)
    assert default == RenderLimits(max_pixels=8192 * 32 * 32, dpi=200)
    largest = RenderLimits.for_request(RecognizeOptions(model=model, max_pixels=30000 * 1024), None)
    assert largest.max_pixels == MAX_PIXELS


def test_pdf_pages_render_one_by_one_within_the_cap(tmp_path: Path) -> None:
    path = write(tmp_path / "three.pdf", pdf_bytes(3))
    limits = RenderLimits(max_pixels=600_000)
    seen = set()
    with open_document(path) as document:
        assert (document.kind, document.page_count) == (DocumentKind.PDF, 3)
        for number in (3, 1, 2):
            page = document.render(number, limits)
            info = inspect_image(page.data)
            assert info.mime == page.mime and (info.width, info.height) == (page.width, page.height)
            assert 0.95 * 600_000 <= page.width * page.height <= 600_000
            seen.add(page.data)
    assert len(seen) == 3  # every page its own image


def test_tiff_frames_are_pages_and_never_enlarged(tmp_path: Path) -> None:
    path = write(tmp_path / "two.tif", tiff_bytes(2))
    with open_document(path) as document:
        assert (document.kind, document.page_count) == (DocumentKind.TIFF, 2)
        large = document.render(2, RenderLimits(max_pixels=5_000_000))
        small = document.render(1, RenderLimits(max_pixels=50_000))
    assert (large.width, large.height) == (425, 550)  # as scanned
    assert small.width * small.height <= 50_000


@pytest.mark.parametrize(
    ("data", "code"),
    [
        (encrypted_pdf_bytes(), "document_encrypted"),
        (corrupt_pdf_bytes(), "document_corrupt"),
        (empty_pdf_bytes(), "document_empty"),
        (b"II*\x00" + b"\x00" * 20, "document_corrupt"),
        (png_bytes(1), "document_corrupt"),  # named .pdf, but an image
    ],
)
def test_documents_that_cannot_be_read_fail_with_their_code(
    tmp_path: Path, data: bytes, code: str
) -> None:
    path = write(tmp_path / "bad.pdf", data)
    with pytest.raises(DocumentError) as caught, open_document(path):
        pass
    assert caught.value.code == code


def test_each_failure_has_its_own_code_whatever_failed_before(tmp_path: Path) -> None:
    # PDFium keeps its last error across loads: each verdict must be this file's.
    files = {
        "encrypted": (encrypted_pdf_bytes(), "document_encrypted"),
        "empty": (empty_pdf_bytes(), "document_empty"),
        "corrupt": (corrupt_pdf_bytes(), "document_corrupt"),
    }
    for order in (["encrypted", "empty", "corrupt", "empty"], ["corrupt", "empty", "encrypted"]):
        for name in order:
            data, code = files[name]
            with (
                pytest.raises(DocumentError) as caught,
                open_document(write(tmp_path / f"{name}.pdf", data)),
            ):
                pass
            assert caught.value.code == code, order


def test_a_blank_page_fails_as_page_blank(tmp_path: Path) -> None:
    path = write(tmp_path / "blank.pdf", pdf_bytes(2, blank=(2,)))
    with open_document(path) as document:
        document.render(1, RenderLimits(max_pixels=200_000))
        with pytest.raises(DocumentError) as caught:
            document.render(2, RenderLimits(max_pixels=200_000))
    assert caught.value.code == "page_blank"


def test_a_page_gone_since_the_expansion_fails_as_document_changed(tmp_path: Path) -> None:
    path = write(tmp_path / "one.pdf", pdf_bytes(1))
    with open_document(path) as document, pytest.raises(DocumentError) as caught:
        document.render(2, RenderLimits(max_pixels=200_000))
    assert caught.value.code == "document_changed"


def test_the_smaller_encoding_is_kept() -> None:
    text_page = Image.new("L", (800, 1000), 255)
    text_page.paste(0, (100, 100, 700, 110))
    data, mime = encode_smallest(text_page)
    assert mime == "image/png"
    rng = random.Random(7)
    photo = Image.frombytes("RGB", (400, 300), bytes(rng.randrange(256) for _ in range(360_000)))
    data, mime = encode_smallest(photo)
    assert mime == "image/jpeg"
    buffer = io.BytesIO()
    photo.save(buffer, format="PNG")
    assert len(data) < len(buffer.getvalue())


def test_a_black_and_white_page_is_sent_in_gray_and_a_coloured_one_in_colour(
    tmp_path: Path,
) -> None:
    coloured = Image.new("RGB", (425, 550), "white")
    coloured.paste((200, 0, 0), (20, 20, 60, 24))  # a thin red rule: colour all the same
    buffer = io.BytesIO()
    coloured.save(buffer, format="PDF", resolution=50)
    limits = RenderLimits(max_pixels=300_000)
    with open_document(write(tmp_path / "red.pdf", buffer.getvalue())) as document:
        red = document.render(1, limits)
    with open_document(write(tmp_path / "gray.pdf", pdf_bytes(1))) as document:
        gray = document.render(1, limits)
    with Image.open(io.BytesIO(red.data)) as image:
        assert image.mode == "RGB"
    with Image.open(io.BytesIO(gray.data)) as image:
        assert image.mode == "L"
