"""Never pay twice: `qocr submit` → real `qocr worker` processes → the emulator, which counts
every request it receives, per image. Copies are the same bytes under other names."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from qocr.models import ItemState
from tests.support.images import png_bytes
from tests.support.pipeline import Deployment, MakeDeployment

pytestmark = pytest.mark.timeout(300)

IMAGES = 5
COPIES = 50


def write_copies(folder: Path, images: range, copies: int) -> list[str]:
    """``copies`` files of each image in ``images``, every one under its own name."""
    folder.mkdir(parents=True)
    for copy in range(copies):
        for index in images:
            (folder / f"scan-{copy:03d}-{index:02d}.png").write_bytes(png_bytes(index))
    return [hashlib.sha256(png_bytes(index)).hexdigest() for index in images]


def finish(deployment: Deployment, batch_id: int) -> None:
    assert deployment.wait_finished(batch_id, timeout=180), deployment.logs()
    counts = deployment.counts(batch_id)
    assert counts[ItemState.SUCCEEDED] == sum(counts.values()), deployment.failures(batch_id)


def test_fifty_copies_of_five_images_make_five_calls_and_a_rerun_none(
    deploy: MakeDeployment, tmp_path: Path
) -> None:
    deployment = deploy(latency_ms=(200, 600))
    keys = write_copies(tmp_path / "copies", range(IMAGES), COPIES)
    batch_id = deployment.submit(str(tmp_path / "copies"))
    # Two worker processes of four threads: copies of one image race across processes.
    with deployment.worker(name="worker-1"), deployment.worker(name="worker-2"):
        finish(deployment, batch_id)
        stats = deployment.emulator.stats()
        assert stats["requests"] == IMAGES
        assert stats["requests_per_image"] == dict.fromkeys(sorted(keys), 1)

        write_copies(tmp_path / "renamed", range(IMAGES), 2)
        rerun_id = deployment.submit(str(tmp_path / "renamed"))
        finish(deployment, rerun_id)
        assert deployment.emulator.stats()["requests"] == IMAGES

    first, rerun = deployment.status(str(batch_id)), deployment.status(str(rerun_id))
    assert first["cached"] == IMAGES * (COPIES - 1)
    assert rerun["cached"] == IMAGES * 2
    saved = rerun["saved"]
    assert isinstance(saved, dict) and saved["usd"] > 0
    usage = rerun["usage"]
    assert isinstance(usage, dict) and usage["total_tokens"] == 0


def test_a_request_that_changes_the_answer_or_no_cache_calls_again(
    deploy: MakeDeployment, tmp_path: Path
) -> None:
    deployment = deploy()
    images = 2
    write_copies(tmp_path / "scans", range(images), 1)
    schema = tmp_path / "schema.json"
    schema.write_text(json.dumps({"invoice_number": "", "total": ""}))
    folder = str(tmp_path / "scans")
    variants = [
        (),  # the first read: paid
        (),  # the same request: from the cache
        ("--schema", str(schema)),
        ("--task", "table_parsing"),
        ("--model", "qwen-vl-ocr-2025-11-20"),
        ("--max-pixels", "1000000"),
        ("--no-cache",),
    ]
    with deployment.worker():
        calls = []
        for variant in variants:
            batch_id = deployment.submit(folder, *variant)
            finish(deployment, batch_id)
            calls.append(deployment.emulator.stats()["requests"])
    made = [after - before for before, after in zip([0, *calls], calls, strict=False)]
    assert made == [images, 0, images, images, images, images, images]
