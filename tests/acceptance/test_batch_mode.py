"""Batch mode with real `qocr worker` processes: `qocr submit --mode batch` through the
emulator's Batch API, with line errors, an expired shard and a worker killed mid-upload,
and a PDF read as its pages."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from sqlalchemy import select

from qocr.models import Attempt, Item, ItemState
from qocr.models.shard_store import ShardStore
from qocr.pricing import price_table
from tests.support.documents import pdf_bytes
from tests.support.images import write_pngs
from tests.support.pipeline import MakeDeployment
from tests.support.processes import QOCR, kill_hard, wait_until

MODEL = "qwen-vl-ocr-latest"
BATCH_ENV = {
    "QOCR_REGION": "cn",
    "QOCR_MODEL": MODEL,
    "QOCR_BATCH_MAX_LINES": "2",
    "QOCR_BATCH_POLL_SECONDS": "0.5",
    "QOCR_LEASE_SECONDS": "5",
}


def test_a_three_shard_batch_survives_line_errors_expiry_and_a_worker_killed_mid_upload(
    deploy: MakeDeployment, tmp_path: Path
) -> None:
    deployment = deploy(batch_lines_per_second=20)
    deployment.extra_env.update(BATCH_ENV)
    # The first provider batch answers one line with a 500, the second expires at once;
    # the first upload's answer is held back, and its worker is killed while it waits.
    deployment.emulator.set_batch_faults(
        plans=[{"error_lines": 1}, {"expire_after_lines": 0}], upload_delays=[8.0]
    )
    images = [str(path) for path in write_pngs(tmp_path / "scans", 6)]

    with deployment.worker(name="first") as first:
        batch_id = deployment.submit(*images, "--mode", "batch", "--prompt", "Read the text.")
        assert wait_until(lambda: deployment.emulator.batch_stats().get("uploads", 0) >= 1, 60)
        kill_hard(first)
    with deployment.worker(name="second"):
        assert deployment.wait_finished(batch_id, timeout=150), deployment.logs()[-4000:]

    # Every item one result.
    assert deployment.counts(batch_id)[ItemState.SUCCEEDED] == 6
    assert deployment.result_count(batch_id) == 6
    # Nothing uploaded or created twice, though a worker died mid-upload.
    stats = deployment.emulator.batch_stats()
    assert all(count == 1 for count in stats["uploads_by_name"].values()), stats
    assert all(count == 1 for count in stats["batches_by_file"].values()), stats
    # Three shards first; the line error's item and the expired shard's two went again.
    shards = ShardStore(deployment.store.engine).shards_of(batch_id)
    statuses = [shard.provider_status for shard in shards]
    assert len(shards) >= 4 and statuses.count("expired") == 1, statuses
    assert sum(shard.lines or 0 for shard in shards[:3]) == 6
    with deployment.store.engine.connect() as conn:
        outcomes = conn.execute(
            select(Attempt.outcome, Attempt.error_code)
            .join(Item, Item.id == Attempt.item_id)
            .where(Item.batch_id == batch_id)
        ).all()
    assert sorted(str(code) for outcome, code in outcomes if outcome == "retry") == [
        "InternalError",
        "batch_expired",
        "batch_expired",
    ]
    assert sum(1 for outcome, _ in outcomes if outcome == "succeeded") == 6

    # Status shows the shards, and the cost at half the realtime price.
    document = deployment.status(str(batch_id))
    assert document["mode"] == "batch"
    assert [shard["provider_status"] for shard in document["shards"]] == statuses
    usage = document["usage"]
    realtime = price_table("cn").price(MODEL).cost(usage["input_tokens"], usage["output_tokens"])
    assert document["cost"]["usd"] == round(realtime / 2, 6)


def test_batch_mode_is_refused_where_the_batch_api_cannot_serve_it(
    deploy: MakeDeployment, tmp_path: Path
) -> None:
    deployment = deploy()
    image = str(write_pngs(tmp_path / "scans", 1)[0])
    for env, args, said in [
        ({"QOCR_REGION": "intl"}, [], "China (Beijing)"),
        ({"QOCR_REGION": "cn"}, ["--api", "dashscope"], "OpenAI-compatible"),
        ({"QOCR_REGION": "cn"}, ["--stream"], "does not stream"),
        ({"QOCR_REGION": "cn"}, ["--model", "qwen-vl-ocr-2025-08-28"], "does not serve"),
    ]:
        completed = subprocess.run(
            [*QOCR, "submit", image, "--mode", "batch", *args],
            env=deployment.env(**env),
            cwd=deployment.tmp,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert completed.returncode == 2, (args, completed.stdout, completed.stderr)
        assert said in completed.stderr, completed.stderr


def test_a_pdf_in_batch_mode_is_read_as_its_pages_and_merged_back_by_document(
    deploy: MakeDeployment, tmp_path: Path
) -> None:
    deployment = deploy(batch_lines_per_second=20)
    deployment.extra_env.update(BATCH_ENV)
    # The worker that expands the PDF dies while its shard's upload waits for an answer:
    # the next one rebuilds that file without the document, and never expands it again.
    deployment.emulator.set_batch_faults(upload_delays=[8.0])
    scans = tmp_path / "scans"
    [image] = write_pngs(scans, 1)
    pdf = scans / "invoice.pdf"
    pdf.write_bytes(pdf_bytes(3))

    with deployment.worker(name="first") as first:
        batch_id = deployment.submit(str(pdf), str(image), "--mode", "batch")
        assert wait_until(lambda: deployment.emulator.batch_stats().get("uploads", 0) >= 1, 60)
        kill_hard(first)
    assert "document expanded into 3 pages" in (deployment.tmp / "first.log").read_text()
    with deployment.worker(name="second"):
        assert deployment.wait_finished(batch_id, timeout=150), deployment.logs()[-4000:]

    assert "document expanded" not in (deployment.tmp / "second.log").read_text()
    counts = deployment.counts(batch_id)
    assert (counts[ItemState.SUCCEEDED], counts[ItemState.EXPANDED]) == (4, 1)
    assert deployment.result_count(batch_id) == 4
    assert deployment.store.get_batch(batch_id).total_items == 5  # type: ignore[union-attr]
    # The document's pages were lines of the shards after the one that expanded it; no
    # file was uploaded twice, and every line was counted once.
    shards = ShardStore(deployment.store.engine).shards_of(batch_id)
    assert sum(shard.lines or 0 for shard in shards) == 4
    stats = deployment.emulator.batch_stats()
    assert all(count == 1 for count in stats["uploads_by_name"].values()), stats
    with deployment.store.engine.connect() as conn:
        outcomes = conn.execute(
            select(Attempt.outcome)
            .join(Item, Item.id == Attempt.item_id)
            .where(Item.batch_id == batch_id)
        ).all()
    assert sorted(str(outcome) for (outcome,) in outcomes) == ["succeeded"] * 4
    exported = deployment.qocr("results", str(batch_id), "--by", "document")
    records = [json.loads(line) for line in exported.splitlines()]
    by_source = {Path(record["source"]).name: record for record in records}
    assert set(by_source) == {"invoice.pdf", image.name}
    assert by_source["invoice.pdf"]["state"] == "succeeded"
    assert by_source["invoice.pdf"]["text"].count("\f") == 2  # three pages, in order
