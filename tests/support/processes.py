"""Real qocr processes for acceptance tests: `qocr worker` (and friends) as subprocesses."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

QOCR = [sys.executable, "-m", "qocr"]


def qocr_env(**overrides: str) -> dict[str, str]:
    """The environment for a qocr subprocess: this one, minus stray QOCR_ settings, plus ours."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QOCR_")}
    env.pop("DASHSCOPE_API_KEY", None)
    env.update(overrides)
    return env


@contextmanager
def qocr_process(
    args: list[str], env: dict[str, str], log_path: Path, cwd: Path | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``qocr ARGS`` in its own process group; SIGTERM (then SIGKILL) on exit."""
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            [*QOCR, *args],
            env=env,
            cwd=cwd,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            yield process
        finally:
            stop_process(process)


def stop_process(process: subprocess.Popen[bytes], grace: float = 10.0) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(grace)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait(5)


def kill_hard(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the whole process group: no shutdown code runs anywhere."""
    os.killpg(process.pid, signal.SIGKILL)
    process.wait(5)


def wait_until(condition: Callable[[], bool], timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(interval)
    return condition()
