"""The pipeline end to end: `qocr submit` → PostgreSQL → Celery on Redis → `qocr worker`
processes → the Qwen-OCR emulator → result rows. Real services, real processes."""

from __future__ import annotations

import csv
import functools
import http.server
import json
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from qocr.models import Attempt, BatchState, Item, ItemState
from qocr.s3 import make_s3_client
from tests.support.images import expected_text, png_bytes, write_pngs
from tests.support.pipeline import Deployment, MakeDeployment
from tests.support.processes import wait_until

pytestmark = pytest.mark.timeout(240)


def _state(deployment: Deployment, batch_id: int) -> BatchState | None:
    batch = deployment.store.get_batch(batch_id)
    return None if batch is None else batch.state


@pytest.fixture
def http_root(tmp_path: Path) -> Iterator[tuple[Path, str]]:
    """A folder served over HTTP on loopback (where the emulator may fetch image URLs)."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_every_source_kind_completes_with_its_own_text(
    deploy: MakeDeployment,
    tmp_path: Path,
    s3_endpoint: str,
    s3_bucket: str,
    http_root: tuple[Path, str],
) -> None:
    deployment = deploy()
    deployment.extra_env["QOCR_S3_ENDPOINT_URL"] = s3_endpoint
    expected: dict[str, bytes] = {}

    folder = tmp_path / "scans"
    for path in write_pngs(folder / "nested", 3, start=0):
        expected[str(path.resolve())] = path.read_bytes()
    (folder / "notes.txt").write_text("not an image, and not picked from a folder")
    single = write_pngs(tmp_path / "single", 1, start=10)[0]
    expected[str(single.resolve())] = single.read_bytes()

    s3 = make_s3_client(s3_endpoint)
    for index in range(20, 23):
        key = f"inbox/2026/doc-{index}.png"
        s3.put_object(Bucket=s3_bucket, Key=key, Body=png_bytes(index))
        expected[f"s3://{s3_bucket}/{key}"] = png_bytes(index)
    s3.put_object(Bucket=s3_bucket, Key="other/one.png", Body=png_bytes(30))
    expected[f"s3://{s3_bucket}/other/one.png"] = png_bytes(30)

    www, base = http_root
    (www / "web.png").write_bytes(png_bytes(40))
    expected[f"{base}/web.png"] = png_bytes(40)

    manifests = tmp_path / "manifests"
    manifests.mkdir()
    plain = write_pngs(tmp_path / "from-manifest", 3, start=50)
    (manifests / "list.txt").write_text(f"# scans\n{plain[0]}\n\n")
    with (manifests / "list.csv").open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=["id", "source"])
        writer.writeheader()
        writer.writerow({"id": "1", "source": str(plain[1])})
    (manifests / "list.jsonl").write_text(json.dumps({"source": str(plain[2])}) + "\n")
    for path in plain:
        expected[str(path.resolve())] = path.read_bytes()

    batch_id = deployment.submit(
        str(folder),
        str(single),
        f"s3://{s3_bucket}/inbox/",
        f"s3://{s3_bucket}/other/one.png",
        f"{base}/web.png",
        f"@{manifests / 'list.txt'}",
        f"@{manifests / 'list.csv'}",
        f"@{manifests / 'list.jsonl'}",
    )
    with deployment.worker():
        assert deployment.wait_finished(batch_id, timeout=90), deployment.logs()
        # The worker's dispatcher closes a finished batch on its next tick (every second).
        assert wait_until(lambda: _state(deployment, batch_id) == BatchState.COMPLETED, 10)

    results = deployment.results_by_source(batch_id)
    assert set(results) == set(expected), deployment.failures(batch_id)
    for source, data in expected.items():
        assert results[source] == expected_text(data), source
    assert deployment.counts(batch_id)[ItemState.SUCCEEDED] == len(expected)
    with deployment.store.sessions() as session:
        etag = session.scalar(
            select(Item.fingerprint).where(Item.source == f"s3://{s3_bucket}/inbox/2026/doc-20.png")
        )
        assert etag and len(etag) == 32  # the S3 ETag, kept as the content fingerprint
    # Each image was paid for exactly once.
    stats = deployment.emulator.stats()
    assert sorted(stats["successes_per_image"].values()) == [1] * len(expected)


def test_presigned_s3_mode_sends_urls(
    deploy: MakeDeployment, s3_endpoint: str, s3_bucket: str
) -> None:
    deployment = deploy()
    deployment.extra_env["QOCR_S3_ENDPOINT_URL"] = s3_endpoint
    s3 = make_s3_client(s3_endpoint)
    s3.put_object(Bucket=s3_bucket, Key="p/a.png", Body=png_bytes(1))
    batch_id = deployment.submit(f"s3://{s3_bucket}/p/", "--s3-mode", "presign")
    with deployment.worker():
        assert deployment.wait_finished(batch_id, timeout=60), deployment.logs()
    assert deployment.results_by_source(batch_id) == {
        f"s3://{s3_bucket}/p/a.png": expected_text(png_bytes(1))
    }, deployment.failures(batch_id)


def test_faulty_service_every_item_succeeds_once(deploy: MakeDeployment, tmp_path: Path) -> None:
    deployment = deploy(error_rate=0.2, drop_rate=0.05, rpm=300, latency_ms=(20, 120), seed=7)
    paths = write_pngs(tmp_path / "faults", 40)
    batch_id = deployment.submit(str(tmp_path / "faults"))
    # prefork here (the default pool): forked children must not share the parent's sockets.
    with deployment.worker("--pool", "prefork", QOCR_RPM="300"):
        assert deployment.wait_finished(batch_id, timeout=150), deployment.logs()

    assert deployment.counts(batch_id)[ItemState.SUCCEEDED] == len(paths)
    assert deployment.result_count(batch_id) == len(paths)
    stats = deployment.emulator.stats()
    assert sorted(stats["successes_per_image"].values()) == [1] * len(paths)
    with deployment.store.sessions() as session:
        attempts = session.scalar(select(func.count()).select_from(Attempt))
        failed_calls = session.scalar(
            select(func.count()).select_from(Attempt).where(Attempt.error_code.is_not(None))
        )
    # Every call the service saw is an attempt row, failures included.
    assert attempts == stats["requests"]
    assert failed_calls and failed_calls >= 1
    assert failed_calls == stats["requests"] - stats["successes"]


def test_bad_inputs_fail_alone(
    deploy: MakeDeployment, tmp_path: Path, s3_endpoint: str, s3_bucket: str
) -> None:
    deployment = deploy()
    deployment.extra_env["QOCR_S3_ENDPOINT_URL"] = s3_endpoint
    folder = tmp_path / "mixed"
    good = write_pngs(folder, 3)
    (folder / "empty.png").write_bytes(b"")
    (folder / "text.png").write_text("this is a text file with an image name")
    with (folder / "huge.png").open("wb") as handle:
        handle.write(png_bytes(1))
        handle.write(b"\0" * (11 * 1024 * 1024))
    missing = f"s3://{s3_bucket}/missing/key.png"
    unreachable = "http://127.0.0.1:9/nothing-listens-here.png"
    batch_id = deployment.submit(str(folder), missing, unreachable)
    with deployment.worker():
        assert deployment.wait_finished(batch_id, timeout=90), deployment.logs()

    with deployment.store.sessions() as session:
        codes = dict(
            session.execute(
                select(Item.source, Item.last_error_code).where(
                    Item.batch_id == batch_id, Item.state == ItemState.FAILED
                )
            ).all()
        )
    by_name = {source.rsplit("/", 1)[-1]: code for source, code in codes.items()}
    assert by_name["empty.png"] == "image_empty"
    assert by_name["text.png"] == "image_unsupported_format"
    assert by_name["huge.png"] == "image_too_large"
    assert by_name["key.png"] == "source_not_found"
    assert by_name["nothing-listens-here.png"]  # the provider's own code, kept verbatim
    assert deployment.counts(batch_id)[ItemState.SUCCEEDED] == len(good)


@pytest.mark.parametrize(
    ("emulator_options", "submit_args", "expected_code"),
    [
        ({"api_key": "sk-the-right-key"}, [], "invalid_api_key"),
        ({}, ["--model", "qwen-vl-ocr-nonexistent"], "model_not_found"),
    ],
    ids=["wrong-key", "unknown-model"],
)
def test_batch_wide_errors_stop_the_batch(
    deploy: MakeDeployment,
    tmp_path: Path,
    emulator_options: dict[str, str],
    submit_args: list[str],
    expected_code: str,
) -> None:
    deployment = deploy(**emulator_options)
    write_pngs(tmp_path / "stop", 30)
    batch_id = deployment.submit(str(tmp_path / "stop"), *submit_args)
    with deployment.worker():
        assert deployment.wait_finished(batch_id, timeout=60), deployment.logs()
    batch = deployment.store.get_batch(batch_id)
    assert batch is not None
    assert batch.state == BatchState.STOPPED
    assert batch.stop_reason and expected_code.lower() in batch.stop_reason.lower()
    counts = deployment.counts(batch_id)
    # Only the calls already in flight were made; the rest never cost a request.
    assert 1 <= counts[ItemState.FAILED] <= 4
    assert counts[ItemState.CANCELLED] == 30 - counts[ItemState.FAILED]
    assert deployment.emulator.stats()["requests"] <= 4
    assert "sk-acceptance" not in deployment.logs()
