"""``qocr status BATCH`` shows the rate the fleet uses for the batch's model, read from the
throttle in Redis, and the 429 share of its last minute of calls."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from click.testing import CliRunner
from sqlalchemy import Engine

from qocr.cli import cli
from qocr.models.records import BatchSpec, SourceRow
from qocr.models.store import Store
from qocr.qwen.options import RecognizeOptions
from qocr.settings import get_settings
from qocr.worker.gcra import HEADROOM, START_SECONDS
from qocr.worker.throttle import Limits, Throttle
from qocr.worker.throttle_redis import RedisBackend

MODEL = "qwen-vl-ocr-latest"


@pytest.fixture
def batch_id(engine: Engine) -> int:
    store = Store(engine)
    options = RecognizeOptions(model=MODEL)
    spec = BatchSpec(name="fleet", api="compatible", model=MODEL, options=options.to_dict())
    return store.create_batch(spec, [SourceRow("https://img.example/a.png")])[0]


@pytest.fixture
def env(
    monkeypatch: pytest.MonkeyPatch, database_url: str, redis_url: str
) -> Iterator[dict[str, str]]:
    values = {"QOCR_DATABASE_URL": database_url, "QOCR_BROKER_URL": redis_url, "QOCR_RPM": "600"}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    yield values
    get_settings.cache_clear()


def status(batch_id: int, *args: str) -> Any:
    result = CliRunner().invoke(cli, ["status", str(batch_id), *args])
    assert result.exit_code == 0, result.output
    if "--json" in args:
        return json.loads(result.output)
    return " ".join(result.output.split())  # the table wraps long rows


def lowered_fleet(redis_url: str) -> float:
    """Workers' calls in Redis: past their start, a tenth answered 429; the rate lowered."""
    client = redis.Redis.from_url(redis_url)
    throttle = Throttle(RedisBackend(client), max_wait=30)
    limits = Limits(rpm=600, tpm=None)
    slots = [throttle.reserve(MODEL, limits, 1)]
    while slots[-1].grant.slot - slots[0].grant.slot < START_SECONDS + 1:
        slots.append(throttle.reserve(MODEL, limits, 1))
    for slot in slots[-10::2]:
        throttle.penalize(MODEL, None, slot)
    time.sleep(max(0.0, slots[-1].grant.slot - time.time()) + 0.2)  # all of them due now
    factor = throttle.fleet_rate(MODEL, limits).factor
    client.close()
    return factor


def test_status_shows_the_fleet_rate_and_its_429_share(env: dict[str, str], batch_id: int) -> None:
    factor = lowered_fleet(env["QOCR_BROKER_URL"])
    assert factor < 1.0
    fleet = status(batch_id, "--json")["fleet"]
    assert fleet["rpm_ceiling"] == 600
    assert fleet["requests_per_minute"] == pytest.approx(600 * HEADROOM * factor, abs=0.1)
    assert fleet["share_of_ceiling"] == pytest.approx(factor, abs=1e-4)
    assert fleet["window_seconds"] == 60
    assert fleet["status_429"] == 5
    assert fleet["calls"] > 50
    assert fleet["share_429"] == pytest.approx(5 / fleet["calls"], abs=1e-4)
    human = status(batch_id)
    rate = f"{fleet['requests_per_minute']:,.0f} requests/min in use"
    assert rate in human
    assert f"429 {100 * fleet['share_429']:.1f} % of {fleet['calls']:,} calls" in human


def test_a_fleet_that_has_not_called_yet_is_at_its_ceiling(
    env: dict[str, str], batch_id: int
) -> None:
    fleet = status(batch_id, "--json")["fleet"]
    assert fleet["requests_per_minute"] == pytest.approx(600 * HEADROOM)
    assert (fleet["calls"], fleet["share_429"]) == (0, None)
    assert "no calls in the last 60 s" in status(batch_id)


def test_without_redis_status_still_answers(
    env: dict[str, str], batch_id: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    monkeypatch.setenv("QOCR_BROKER_URL", f"redis://127.0.0.1:{closed_port}/0")
    get_settings.cache_clear()
    started = time.monotonic()
    assert status(batch_id, "--json")["fleet"] is None
    assert time.monotonic() - started < 5
    assert "Rate" not in status(batch_id)


def test_a_batch_no_longer_running_shows_no_rate(
    env: dict[str, str], batch_id: int, engine: Engine
) -> None:
    Store(engine).stop_batch(batch_id, "stopped by the test", code="batch_stopped")
    assert "fleet" not in status(batch_id, "--json")
