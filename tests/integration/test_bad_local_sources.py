"""Local sources that went bad after submit, on the embedded runner's code path (``qocr
run``): a file replaced by a FIFO fails its item at once instead of blocking a worker
thread, and a truncated PNG or JPEG fails before any call (issue 13, point 7).

Real SQL (SQLite and PostgreSQL), the real emulator; the batch is made by the submit code.
"""

from __future__ import annotations

import io
import os
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from sqlalchemy import Engine, select

from qocr.emulator.testing import EmulatorHandle, running_emulator
from qocr.models import Item, ItemState
from qocr.models.store import Store
from qocr.qwen.options import RecognizeOptions
from qocr.scheduler.submit import BatchRequest, create_batch
from qocr.settings import load_settings
from qocr.worker.embedded import run_batch
from qocr.worker.process import ItemProcessor
from qocr.worker.runtime import memory_runtime
from tests.support.images import png_bytes

# Three items, one of them good: far below this unless something blocks.
RUN_SECONDS = 60.0


@pytest.fixture
def emulator() -> Iterator[EmulatorHandle]:
    with running_emulator(recognizer="hash", seed=3) as handle:
        yield handle


def jpeg_bytes() -> bytes:
    buffer = io.BytesIO()
    Image.open(io.BytesIO(png_bytes(9))).convert("RGB").save(buffer, "JPEG", quality=85)
    return buffer.getvalue()


def test_a_fifo_and_truncated_images_fail_their_items_without_blocking_or_a_call(
    engine: Engine, emulator: EmulatorHandle, tmp_path: Path
) -> None:
    folder = tmp_path / "scans"
    folder.mkdir()
    good, becomes_fifo = folder / "good.png", folder / "later-a-fifo.png"
    cut_png, cut_jpeg = folder / "cut.png", folder / "cut.jpg"
    for path in (good, becomes_fifo):
        path.write_bytes(png_bytes(len(path.name)))
    cut_png.write_bytes(png_bytes(5)[:-12])  # all but the IEND chunk
    whole_jpeg = jpeg_bytes()
    cut_jpeg.write_bytes(whole_jpeg[: len(whole_jpeg) // 2])

    settings = load_settings(DASHSCOPE_API_KEY="sk-x", base_url=emulator.base_url)
    store = Store(engine)
    request = BatchRequest(
        sources=[str(folder)],
        options=RecognizeOptions(model="qwen-vl-ocr-latest"),
        api="compatible",
    )
    batch_id, count = create_batch(store, request, settings)
    assert count == 4
    # After submit, the file becomes a FIFO that nobody writes to.
    becomes_fifo.unlink()
    os.mkfifo(becomes_fifo)

    runtime = memory_runtime(settings, store)
    processor = ItemProcessor(runtime, sleep=lambda seconds: None)
    runner = threading.Thread(target=run_batch, args=(processor, batch_id, 2), daemon=True)
    runner.start()
    runner.join(RUN_SECONDS)
    blocked = runner.is_alive()
    if blocked:  # let the stuck thread go before failing
        os.close(os.open(becomes_fifo, os.O_WRONLY | os.O_NONBLOCK))
        runner.join(RUN_SECONDS)
    runtime.close()
    assert not blocked, f"the embedded run was still going after {RUN_SECONDS} s"

    with store.sessions() as session:
        items = session.scalars(select(Item).where(Item.batch_id == batch_id)).all()
        outcome = {Path(item.source).name: (item.state, item.last_error_code) for item in items}
    assert outcome == {
        "good.png": (ItemState.SUCCEEDED, None),
        "later-a-fifo.png": (ItemState.FAILED, "source_not_regular_file"),
        "cut.png": (ItemState.FAILED, "image_truncated"),
        "cut.jpg": (ItemState.FAILED, "image_truncated"),
    }
    assert emulator.stats()["requests"] == 1  # only the good image was sent (and paid)
