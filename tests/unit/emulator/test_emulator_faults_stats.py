"""Fault draws, request ids, counters and the config's validation."""

from __future__ import annotations

import uuid
from collections import Counter

import pytest

from qocr.emulator.config import EmulatorConfig
from qocr.emulator.faults import FaultInjector, IdFactory
from qocr.emulator.stats import Stats


def _injector(seed: int | None, **rates: float) -> FaultInjector:
    return FaultInjector(
        error_rate=rates.get("error_rate", 0.0),
        drop_rate=rates.get("drop_rate", 0.0),
        latency_ms=(5.0, 15.0),
        seed=seed,
    )


def test_same_seed_same_plans() -> None:
    first = _injector(7, error_rate=0.3, drop_rate=0.2)
    second = _injector(7, error_rate=0.3, drop_rate=0.2)
    plans = [first.plan() for _ in range(200)]
    assert plans == [second.plan() for _ in range(200)]
    assert plans != [_injector(8, error_rate=0.3, drop_rate=0.2).plan() for _ in range(200)]


def test_rates_and_latency_range() -> None:
    injector = _injector(1, error_rate=0.3, drop_rate=0.2)
    plans = [injector.plan() for _ in range(5000)]
    faults = Counter(p.fault for p in plans)
    assert faults["drop"] / 5000 == pytest.approx(0.2, abs=0.03)
    assert faults["error"] / 5000 == pytest.approx(0.3, abs=0.03)
    statuses = Counter(p.error_status for p in plans if p.fault == "error")
    assert set(statuses) == {500, 503}
    assert all(0.005 <= p.latency_s <= 0.015 for p in plans)


def test_no_faults_by_default() -> None:
    injector = FaultInjector(error_rate=0, drop_rate=0, latency_ms=(0, 0), seed=None)
    assert {injector.plan().fault for _ in range(500)} == {"none"}


def test_request_ids_are_uuid4_and_seeded() -> None:
    ids = IdFactory(3)
    first = ids.request_id()
    assert uuid.UUID(first).version == 4
    assert IdFactory(3).request_id() == first
    assert IdFactory(4).request_id() != first
    assert ids.completion_id().startswith("chatcmpl-")


def test_stats_snapshot() -> None:
    stats = Stats()
    stats.request("compatible")
    stats.request("native")
    stats.request("native")
    stats.error(429, "limit_requests")
    stats.drop()
    stats.success(
        admitted_at=120.2, image_keys=["abc"], input_tokens=10, output_tokens=5, image_tokens=8
    )
    snapshot = stats.snapshot()
    assert snapshot["requests"] == 3 and snapshot["successes"] == 1 and snapshot["drops"] == 1
    assert snapshot["by_status"] == {"200": 1, "429": 1}
    assert snapshot["by_error_code"] == {"limit_requests": 1}
    assert snapshot["by_api"] == {"compatible": 1, "native": 2}
    assert snapshot["tokens"] == {"input": 10, "output": 5, "image": 8, "total": 15}
    assert snapshot["successes_per_image"] == {"abc": 1}
    assert snapshot["success_times"] == [120.2]
    assert snapshot["successes_per_second"] == {"120": 1}
    assert snapshot["successes_per_minute"] == {"2": 1}
    assert snapshot["max_successes_in_any_second"] == 1
    stats.reset()
    assert stats.snapshot()["requests"] == 0 and stats.snapshot()["successes_per_image"] == {}


@pytest.mark.parametrize(
    "overrides",
    [
        {"port": 70000},
        {"rpm": 0},
        {"tpm": -5},
        {"latency_ms": (10.0, 5.0)},
        {"latency_ms": (-1.0, 5.0)},
        {"error_rate": 1.5},
        {"drop_rate": -0.1},
        {"error_rate": 0.6, "drop_rate": 0.6},
        {"hang_rate": 1.2},
        {"trickle_rate": 0.5, "long_fields_rate": 0.6},
        {"trickle_interval_s": 0},
        {"recognizer": "tesseract"},
        {"fetch_timeout_s": 0},
        {"stream_chunk_tokens": 0},
    ],
)
def test_config_rejects_bad_values(overrides: dict[str, object]) -> None:
    with pytest.raises(ValueError):
        EmulatorConfig(**overrides)  # type: ignore[arg-type]  # values of any type, to be refused


def test_config_defaults() -> None:
    config = EmulatorConfig()
    assert (config.host, config.port, config.rpm, config.tpm) == ("127.0.0.1", 8000, None, None)
    assert config.latency_ms == (0.0, 0.0) and config.recognizer == "auto"


def test_hostile_faults_are_drawn_from_the_same_roll() -> None:
    rates = {"hang_rate": 0.2, "trickle_rate": 0.2, "long_fields_rate": 0.2}
    injector = FaultInjector(error_rate=0.1, drop_rate=0.1, latency_ms=(0, 0), seed=3, **rates)
    faults = Counter(injector.plan().fault for _ in range(5000))
    for fault in ("hang", "trickle", "long_fields"):
        assert faults[fault] / 5000 == pytest.approx(0.2, abs=0.03)
    assert faults["none"] / 5000 == pytest.approx(0.2, abs=0.03)
    # Adding the new rates at 0 changes nothing for an old seed's sequence.
    old = _injector(7, error_rate=0.3, drop_rate=0.2)
    new = FaultInjector(
        error_rate=0.3, drop_rate=0.2, latency_ms=(5.0, 15.0), seed=7, hang_rate=0.0
    )
    assert [old.plan() for _ in range(100)] == [new.plan() for _ in range(100)]


def test_fault_settings_change_at_once_or_not_at_all() -> None:
    injector = _injector(1)
    assert injector.update({"hang_rate": 1.0})["hang_rate"] == 1.0
    assert {injector.plan().fault for _ in range(50)} == {"hang"}
    for bad in (
        {"error_rate": 0.5},  # 0.5 + the hang rate of 1.0 is over 1
        {"hang_rate": "1"},
        {"latency_ms": [5, 1]},
        {"trickle_interval_s": -1},
        {"flood_rate": 0.1},
    ):
        with pytest.raises(ValueError):
            injector.update(bad)
    assert injector.settings() == {
        "drop_rate": 0.0,
        "error_rate": 0.0,
        "hang_rate": 1.0,
        "trickle_rate": 0.0,
        "long_fields_rate": 0.0,
        "latency_ms": [5.0, 15.0],
        "trickle_interval_s": 1.0,
    }
    injector.update({"hang_rate": 0, "error_rate": 1, "latency_ms": [0, 0]})
    assert {injector.plan().fault for _ in range(50)} == {"error"}
