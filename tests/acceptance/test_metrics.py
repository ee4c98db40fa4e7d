"""Prometheus metrics: counts from every forked process summed on one /metrics, gauges read
from SQL and Redis, and a `qocr worker --metrics-port` whose numbers match the database."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import func, select

from qocr.migrations import migrate
from qocr.models import Attempt, Item, ItemState, Result
from qocr.models.db import make_engine
from qocr.models.records import BatchSpec, SourceRow
from qocr.models.store import Store
from qocr.qwen.catalog import model_spec
from qocr.worker.throttle import HEADROOM
from tests.support.images import write_pngs
from tests.support.pipeline import MakeDeployment
from tests.support.processes import qocr_env, wait_until

pytestmark = pytest.mark.timeout(240)

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]

# Three children fork from a process that serves /metrics, each counts, then exits.
FORKED_COUNTS = """
import os, sys, time
from pathlib import Path
from qocr.settings import Settings
from qocr.worker import metrics
from qocr.worker.metrics_server import serve

settings = Settings(database_url=sys.argv[2], redis_url=sys.argv[3], config="none.toml")
server = serve(0, "127.0.0.1", settings, Path(sys.argv[1]))
children = []
for _ in range(3):
    pid = os.fork()
    if pid == 0:
        for _ in range(10):
            metrics.record_call("qwen-vl-ocr", "ok", 0.4)
        metrics.record_call("qwen-vl-ocr", metrics.call_outcome(None), 0.4)
        metrics.record_call("qwen-vl-ocr", "rate_limited", 0.1)
        metrics.record_throttle_wait("qwen-vl-ocr", 0.2)
        metrics.record_tokens("qwen-vl-ocr", 700, 30)
        metrics.record_finished("failed", "image_empty")
        os._exit(0)
    children.append(pid)
for pid in children:
    os.waitpid(pid, 0)
metrics.record_finished("succeeded", count=2)
print(server.server_port, flush=True)
time.sleep(300)
"""


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    samples: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, tuple(sorted(labels.items()))), 0.0)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite:///{tmp_path / 'qocr.db'}"
    engine = make_engine(url)
    migrate.upgrade(engine)
    engine.dispose()
    return url


@pytest.fixture
def forked(tmp_path: Path, sqlite_url: str, redis_url: str) -> Iterator[int]:
    process = subprocess.Popen(
        [sys.executable, "-c", FORKED_COUNTS, str(tmp_path / "metrics"), sqlite_url, redis_url],
        env=qocr_env(),
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    try:
        yield int(process.stdout.readline())
    finally:
        process.kill()
        process.wait(10)


def test_counts_of_every_forked_process_are_summed_on_one_endpoint(
    forked: int, sqlite_url: str, redis_url: str
) -> None:
    store = Store(make_engine(sqlite_url))
    spec = BatchSpec(name="b", api="compatible", model="qwen-vl-ocr", options={})
    batch_id, _ = store.create_batch(spec, [SourceRow(f"https://x/{n}.png") for n in range(3)])
    store.engine.dispose()
    # The fleet was answered a 429 a moment ago: its rate is down to half the limit.
    redis.Redis.from_url(redis_url).hset(
        "qocr:throttle:qwen-vl-ocr", mapping={"factor": 0.5, "pat": time.time(), "pause": 0}
    )

    samples = scrape(forked)

    calls = "qocr_provider_calls_total"
    assert value(samples, calls, model="qwen-vl-ocr", outcome="ok") == 33
    assert value(samples, calls, model="qwen-vl-ocr", outcome="rate_limited") == 3
    assert value(samples, "qocr_call_latency_seconds_count", model="qwen-vl-ocr") == 36
    assert value(samples, "qocr_throttle_wait_seconds_count", model="qwen-vl-ocr") == 3
    assert value(samples, "qocr_tokens_total", model="qwen-vl-ocr", kind="input") == 2100
    assert value(samples, "qocr_tokens_total", model="qwen-vl-ocr", kind="output") == 90
    finished = "qocr_items_finished_total"
    assert value(samples, finished, state="failed", code="image_empty") == 3
    assert value(samples, finished, state="succeeded", code="") == 2
    items = "qocr_batch_items"
    assert value(samples, items, batch=str(batch_id), state="queued") == 3
    assert value(samples, "qocr_batches_running") == 1
    rpm = value(samples, "qocr_rate_limit_requests_per_minute", model="qwen-vl-ocr")
    full = model_spec("qwen-vl-ocr").rpm * HEADROOM
    assert 0.5 * full <= rpm < 0.7 * full  # recovering linearly over 10 s
    assert value(samples, "qocr_rate_limit_requests_per_minute", model="qwen-vl-ocr-latest") == (
        pytest.approx(model_spec("qwen-vl-ocr-latest").rpm * HEADROOM)
    )


def test_a_worker_serves_gauges_that_move_with_the_run(
    deploy: MakeDeployment, tmp_path: Path
) -> None:
    deployment = deploy(latency_ms=(300.0, 600.0))
    write_pngs(tmp_path / "scans", 30)
    port = free_port()
    args = ("--pool", "prefork", "-c", "2", "--metrics-port", str(port))
    with deployment.worker(*args):
        assert wait_until(lambda: _answers(port), 30), deployment.logs()[-2000:]
        batch_id = deployment.submit(str(tmp_path / "scans"))
        seen: list[float] = []

        def queued_now() -> float:
            queued = value(scrape(port), "qocr_batch_items", batch=str(batch_id), state="queued")
            seen.append(queued)
            return queued

        # Watched while it runs: scraped until the batch has left the running state.
        assert wait_until(lambda: queued_now() == 0 and not _running(port), 120, 0.3), seen
        after = scrape(port)

    during = [queued for queued in seen if 0 < queued < 30]
    assert len(set(during)) >= 2 and during == sorted(during, reverse=True), seen
    assert value(after, "qocr_batch_items", batch=str(batch_id), state="queued") == 0
    assert value(after, "qocr_rate_limit_requests_per_minute", model="qwen-vl-ocr-latest") > 0


def test_a_workers_counters_match_the_database(deploy: MakeDeployment, tmp_path: Path) -> None:
    deployment = deploy(latency_ms=(50.0, 150.0), error_rate=0.2, seed=3)
    write_pngs(tmp_path / "scans", 20)
    (tmp_path / "scans" / "empty.png").write_bytes(b"")
    port = free_port()
    with deployment.worker("--pool", "prefork", "-c", "3", "--metrics-port", str(port)):
        assert wait_until(lambda: _answers(port), 30)
        batch_id = deployment.submit(str(tmp_path / "scans"))
        assert deployment.wait_finished(batch_id, 120)
        samples = scrape(port)

    with deployment.store.sessions() as session:
        calls = session.scalar(select(func.count()).select_from(Attempt).join(Item))
        succeeded = session.scalar(
            select(func.count()).where(Item.batch_id == batch_id, Item.state == ItemState.SUCCEEDED)
        )
        tokens_in, tokens_out = session.execute(
            select(func.sum(Result.input_tokens), func.sum(Result.output_tokens))
        ).one()
    model = "qwen-vl-ocr-latest"
    made = sum(v for (name, labels), v in samples.items() if name == "qocr_provider_calls_total")
    assert made == calls and calls > 21  # the emulator's errors made retries
    assert value(samples, "qocr_provider_calls_total", model=model, outcome="ok") == succeeded
    finished = "qocr_items_finished_total"
    assert value(samples, finished, state="succeeded", code="") == succeeded == 20
    assert value(samples, finished, state="failed", code="image_empty") == 1
    assert value(samples, "qocr_tokens_total", model=model, kind="input") == tokens_in
    assert value(samples, "qocr_tokens_total", model=model, kind="output") == tokens_out


def _running(port: int) -> bool:
    return value(scrape(port), "qocr_batches_running") > 0


def _answers(port: int) -> bool:
    try:
        scrape(port)
    except OSError:
        return False
    return True
