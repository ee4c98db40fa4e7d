"""The benchmarks at their quick size: each runs and produces its figures (never a speed).

``bench/run_all.py --quick`` against real PostgreSQL and Redis (databases 10 and 11), the
emulator and real ``qocr worker`` processes, writing its JSON and a RESULTS.md into a
temporary folder. Only the presence of the figures and the sanity of the counts are
asserted: timings on a shared CI machine say nothing.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[2]

pytestmark = [pytest.mark.slow, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("bench")
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "run_all.py"),
            "--quick",
            "--out",
            str(out),
            "--results",
            str(out / "RESULTS.md"),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=540,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return out


def load(folder: Path, name: str) -> dict[str, Any]:
    document: dict[str, Any] = json.loads((folder / f"{name}.json").read_text())
    return document


def test_every_benchmark_reports_the_machine(quick_run: Path) -> None:
    for name in ("saturation", "overhead", "scale", "recovery"):
        machine = load(quick_run, name)["machine"]
        for key in ("cpu", "cores", "ram_gib", "python", "redis", "postgresql", "git_commit"):
            assert machine[key], (name, key)


def test_saturation_figures(quick_run: Path) -> None:
    scenario = load(quick_run, "saturation")["scenarios"]["rpm600"]
    for system in ("qocr", "baseline"):
        figures = scenario[system]
        assert figures["successes"] > 0
        assert figures["requests"] >= figures["successes"] + figures["status_429"]
        assert 0 <= figures["share_429"] <= 1
        assert figures["ratio"] > 0
        assert figures["successes_in_window"] > 0
        # The strict emulator: never more than RPM/60 in a second; 429s in the service's words.
        assert figures["max_successes_in_any_second"] <= 10
        assert set(figures["by_error_code"]) <= {"limit_burst_rate", "limit_requests"}
    qocr = scenario["qocr"]
    assert qocr["fleet_rate_samples"], "the fleet's rate in force, read from Redis"
    assert all(0 < s["rpm_in_use"] <= 600 for s in qocr["fleet_rate_samples"])
    assert qocr["rate_changes_logged"] >= 0


def test_overhead_figures(quick_run: Path) -> None:
    document = load(quick_run, "overhead")
    items = document["config"]["items"]
    assert document["floor"]["completed"] == items
    assert document["call_floor"]["completed"] == items
    assert document["qocr"]["states"] == {"succeeded": items}
    assert document["floor"]["items_per_second"] > 0
    assert document["call_floor"]["items_per_second"] > 0
    assert document["qocr"]["items_per_second"] > 0
    assert document["ratio"] > 0
    assert document["call_floor_ratio"] > 0
    assert document["ratio_to_call_floor"] > 0
    # What an item cost the machine, by role: the worker always; the emulator wherever a
    # call was made; the machine's busy time covers the worker's (the two are read a few
    # milliseconds apart: a quick run's span is a fraction of a second).
    for system in ("floor", "call_floor", "qocr"):
        cpu = document[system]["cpu_ms_per_item"]
        assert cpu["worker"] > 0, system
        assert cpu["machine"] >= 0.8 * cpu["worker"], system
    for system in ("call_floor", "qocr"):
        assert document[system]["cpu_ms_per_item"]["emulator"] > 0, system
    today = document["census"]["today"]
    assert today["per_item"]["sql_statements"] > 0
    assert today["rows_written"]["results"] == today["items"] + 1  # and the warm-up item
    assert set(document["image_path"]) >= {"small_png_3kb"}


def test_scale_figures(quick_run: Path) -> None:
    document = load(quick_run, "scale")
    assert document["config"]["items"] == 10_000
    assert document["submit_wall_s"] > 0
    assert document["drain"]["done"] >= document["config"]["drain_target"]
    assert document["redis"]["samples"] > 0
    assert document["redis"]["peak_used_memory_mib"] > 0
    assert document["database"]["items_total_bytes_per_item"] > 0
    assert document["worker_rss"]["by_items_done"]["100%"]["rss_mib"] > 0
    assert document["status_on_this_batch"]["warm_median_ms"] > 0


def test_recovery_figures(quick_run: Path) -> None:
    document = load(quick_run, "recovery")
    items = document["config"]["items"]
    assert document["batch_finished"]
    assert document["results"] == items
    assert document["states"] == {"succeeded": items}
    assert document["orphans_rerun"] == document["orphans"]
    assert document["images_paid"] == items
    assert 0 <= document["images_paid_twice"] <= document["orphans"]


def test_status_latency_and_results_file(quick_run: Path) -> None:
    if (REPO / "bench" / "status_latency.py").exists():
        document = load(quick_run, "status_latency")
        assert document["cold_ms"] > 0
        assert document["warm_median_ms"] > 0
    results = (quick_run / "RESULTS.md").read_text()
    assert "## Targets" in results
    assert "## 4. Recovery" in results


def test_submit_copy_figures(tmp_path: Path) -> None:
    """bench/submit_copy.py at a small size (not part of run_all: issue 20's own benchmark)."""
    json_out = tmp_path / "submit_copy.json"
    done = subprocess.run(
        [
            sys.executable,
            str(REPO / "bench" / "submit_copy.py"),
            "--lines",
            "5000",
            "--rounds",
            "2",
            "--redis-db",
            "10",
            "--json-out",
            str(json_out),
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    document = load(tmp_path, "submit_copy")
    assert len(document["copy_runs_s"]) == 3 and len(document["ratio_runs"]) == 2
    assert document["submit_items"] == 5000
    assert document["ratio_submit_to_copy"] in document["ratio_runs"]
    assert document["submit_peak_rss_mib"] > 0
    profile = document["profile"]
    assert profile["items"] == profile["sources"] == 5000
    # No line repeats: the submit must not have searched the batch for repeats.
    assert profile["dedupe_in_create_batch"] is False
    assert profile["dedupe_delete_alone_s"] > 0
    assert profile["published_messages"] > 0
