"""Real reading with RapidOCR (the 'local' extra): known words come back, with plausible boxes."""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from PIL import Image

from qocr.emulator.testing import EmulatorHandle, running_emulator, text_png
from qocr.qwen.images import to_data_url

pytest.importorskip("rapidocr_onnxruntime")
pytestmark = pytest.mark.timeout(180)

NATIVE = "/api/v1/services/aigc/multimodal-generation/generation"
COMPATIBLE = "/compatible-mode/v1/chat/completions"
LINES = ["INVOICE 20931", "Total amount 458.75", "Customer Helsinki"]
PNG = text_png(LINES, font_size=56)
WIDTH, HEIGHT = Image.open(io.BytesIO(PNG)).size


def _words(text: str) -> set[str]:
    return set(text.replace("\n", " ").split())


def native(task: str) -> dict[str, Any]:
    return {
        "model": "qwen-vl-ocr-2025-11-20",
        "input": {
            "messages": [{"role": "user", "content": [{"image": to_data_url(PNG, "image/png")}]}]
        },
        "parameters": {"ocr_options": {"task": task}},
    }


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorHandle]:
    with running_emulator(recognizer="rapidocr") as handle:
        yield handle


def test_text_recognition_reads_the_words(emulator: EmulatorHandle) -> None:
    body = httpx.post(
        emulator.base_url + NATIVE, json=native("text_recognition"), timeout=60
    ).json()
    text = body["output"]["choices"][0]["message"]["content"][0]["text"]
    assert emulator.stats()["recognizer"] == "rapidocr"
    for expected in ("20931", "Total", "amount", "458.75", "Customer", "Helsinki"):
        assert expected in _words(text), text
    assert text.split("\n")[0].startswith("INVOICE")
    assert len(text.split("\n")) == len(LINES)


def test_advanced_recognition_boxes_are_plausible(emulator: EmulatorHandle) -> None:
    body = httpx.post(
        emulator.base_url + NATIVE, json=native("advanced_recognition"), timeout=60
    ).json()
    words = body["output"]["choices"][0]["message"]["content"][0]["ocr_result"]["words_info"]
    assert len(words) == len(LINES)
    row_height = HEIGHT / (2 * len(LINES) + 1)
    for row, word in enumerate(words):
        x1, y1, x2, y2, x3, y3, x4, y4 = word["location"]
        # Clockwise from the top-left: right of the left edge, below the top edge.
        assert x1 < x2 and x4 < x3 and y1 < y4 and y2 < y3
        assert all(0 <= x <= WIDTH for x in (x1, x2, x3, x4))
        assert all(0 <= y <= HEIGHT for y in (y1, y2, y3, y4))
        cx, cy, w, h, angle = word["rotate_rect"]
        assert x1 <= cx <= x2 and y1 <= cy <= y4
        assert abs(angle) <= 2 and w > h > 0
        # The line was drawn in the band starting at (2 * row + 1) font heights.
        assert (
            (2 * row + 1) * row_height - row_height <= cy <= (2 * row + 2) * row_height + row_height
        )
    assert "Helsinki" in words[2]["text"]


def test_compatible_mode_reads_the_same_text(emulator: EmulatorHandle) -> None:
    content = [{"type": "image_url", "image_url": {"url": to_data_url(PNG, "image/png")}}]
    body = {"model": "qwen-vl-ocr-latest", "messages": [{"role": "user", "content": content}]}
    answer = httpx.post(emulator.base_url + COMPATIBLE, json=body, timeout=60).json()
    assert "458.75" in answer["choices"][0]["message"]["content"]


def test_placeholder_is_readable(emulator: EmulatorHandle) -> None:
    url = "https://help-static-aliyun-doc.aliyuncs.com/file-manage-files/zh-CN/20241108/ctdzex/biaozhun.jpg"
    body = native("text_recognition")
    body["input"]["messages"][0]["content"][0]["image"] = url
    answer = httpx.post(emulator.base_url + NATIVE, json=body, timeout=60).json()
    text = answer["output"]["choices"][0]["message"]["content"][0]["text"]
    assert "biaozhun.jpg" in text and "PLACEHOLDER" in text


SAMPLE_INVOICE = Path(__file__).resolve().parents[2] / "samples" / "invoice-1.png"


def _png(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _read(emulator: EmulatorHandle, png: bytes, *, rotate: bool, api: str = "native") -> str:
    url = to_data_url(png, "image/png")
    if api == "native":
        body = native("text_recognition")
        body["input"]["messages"][0]["content"][0] |= {"image": url, "enable_rotate": rotate}
        answer = httpx.post(emulator.base_url + NATIVE, json=body, timeout=120).json()
        text = answer["output"]["choices"][0]["message"]["content"][0]["text"]
    else:
        part = {"type": "image_url", "image_url": {"url": url}, "enable_rotate": rotate}
        compatible = {
            "model": "qwen-vl-ocr-latest",
            "messages": [{"role": "user", "content": [part]}],
        }
        answer = httpx.post(emulator.base_url + COMPATIBLE, json=compatible, timeout=120).json()
        text = answer["choices"][0]["message"]["content"]
    assert isinstance(text, str)
    return text


def test_a_rotated_invoice_reads_correctly_only_with_enable_rotate(
    emulator: EmulatorHandle,
) -> None:
    # Issue 16.6: enable_rotate was accepted and ignored.
    with Image.open(SAMPLE_INVOICE) as opened:
        upright = opened.convert("RGB")
    sideways = _png(upright.rotate(90, expand=True))  # a scan fed in sideways
    as_written = _read(emulator, _png(upright), rotate=False)
    assert as_written.split("\n")[0] == "INVOICE" and "Total" in as_written.split("\n")[-1]
    assert _read(emulator, sideways, rotate=False) != as_written  # lines out of order
    assert _read(emulator, sideways, rotate=True) == as_written
    assert _read(emulator, sideways, rotate=True, api="compatible") == as_written
    # An upright page is read the same way with or without it.
    assert _read(emulator, _png(upright), rotate=True) == as_written
