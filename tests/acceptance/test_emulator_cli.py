"""``qocr emulator`` as a subprocess: the "listening on" line, serving, clean SIGTERM/SIGINT."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest

pytestmark = pytest.mark.timeout(60)

LISTENING = re.compile(r"^qocr emulator listening on (http://127\.0\.0\.1:(\d+))$")
COMMAND = [sys.executable, "-c", "from qocr.cli import main; main()", "emulator"]


@contextmanager
def emulator_process(*args: str) -> Iterator[tuple[subprocess.Popen[str], str]]:
    process = subprocess.Popen(
        [*COMMAND, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        first = process.stdout.readline().strip()
        match = LISTENING.match(first)
        stderr = "" if match or process.stderr is None else process.stderr.read()
        assert match, f"unexpected first line {first!r}; stderr: {stderr}"
        yield process, match.group(1)
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(10)


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT])
def test_cli_serves_and_stops_cleanly(signum: signal.Signals) -> None:
    args = ["--port", "0", "--seed", "1", "--recognizer", "hash", "--rpm", "600"]
    with emulator_process(*args) as (process, base_url):
        health = httpx.get(f"{base_url}/_health", timeout=5)
        assert health.json() == {"status": "ok", "recognizer": "hash"}
        body = {
            "model": "qwen-vl-ocr",
            "input": {
                "messages": [{"role": "user", "content": [{"image": "https://x.test/a.png"}]}]
            },
        }
        answer = httpx.post(
            f"{base_url}/api/v1/services/aigc/multimodal-generation/generation",
            json=body,
            timeout=10,
        )
        assert answer.status_code == 200
        assert httpx.get(f"{base_url}/_stats", timeout=5).json()["successes"] == 1
        process.send_signal(signum)
        out, err = process.communicate(timeout=15)
    assert process.returncode == 0, err
    assert "qocr emulator stopped" in out
    assert "Traceback" not in err


def test_cli_rejects_bad_flags() -> None:
    result = subprocess.run(
        [*COMMAND, "--error-rate", "0.7", "--drop-rate", "0.7"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "error_rate + drop_rate must not exceed 1" in result.stderr


def test_cli_reports_a_busy_port() -> None:
    with emulator_process("--port", "0", "--recognizer", "hash") as (_, base_url):
        port = base_url.rsplit(":", 1)[1]
        result = subprocess.run(
            [*COMMAND, "--port", port, "--recognizer", "hash"],
            capture_output=True,
            text=True,
            timeout=30,
        )
    assert result.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr


def test_cli_hostile_fault_flags_and_switching_them_while_it_runs() -> None:
    refused = subprocess.run(
        [*COMMAND, "--hang-rate", "0.6", "--long-fields-rate", "0.6"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert refused.returncode == 2
    assert "hang_rate + long_fields_rate must not exceed 1" in refused.stderr
    args = ["--port", "0", "--recognizer", "hash", "--trickle-rate", "0.25", "--hang-rate", "0.5"]
    with emulator_process(*args) as (process, base_url):
        faults = httpx.get(f"{base_url}/_faults", timeout=5).json()
        assert (faults["trickle_rate"], faults["hang_rate"]) == (0.25, 0.5)
        switched = httpx.post(f"{base_url}/_faults", json={"hang_rate": 0}, timeout=5).json()
        assert (switched["trickle_rate"], switched["hang_rate"]) == (0.25, 0.0)
        process.send_signal(signal.SIGTERM)
        process.communicate(timeout=15)
    assert process.returncode == 0
