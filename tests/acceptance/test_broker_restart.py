"""A broker that restarts empty mid-run (no persistence) costs time, not items."""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from qocr.models import ItemState
from tests.acceptance.conftest import MakeDeployment
from tests.support.binaries import redis_server_binary
from tests.support.images import write_pngs
from tests.support.processes import wait_until

pytestmark = pytest.mark.timeout(240)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class PrivateRedis:
    """A redis-server of our own (no persistence), so the test may kill and restart it."""

    def __init__(self, workdir: Path) -> None:
        self.port = _free_port()
        self.workdir = workdir
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [
                redis_server_binary(),
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
        )
        assert wait_until(self._answers, 10)

    def kill(self) -> None:
        assert self.process is not None
        self.process.kill()
        self.process.wait(5)

    def _answers(self) -> bool:
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=0.2):
                return True
        except OSError:
            return False


@pytest.fixture
def private_redis(tmp_path: Path) -> Iterator[PrivateRedis]:
    server = PrivateRedis(tmp_path)
    server.start()
    yield server
    if server.process is not None and server.process.poll() is None:
        server.kill()


def test_redis_restart_mid_run_loses_nothing(
    deploy: MakeDeployment, tmp_path: Path, private_redis: PrivateRedis
) -> None:
    deployment = deploy(latency_ms=(200, 600), seed=9)
    deployment.broker_url = private_redis.url
    total = 40
    write_pngs(tmp_path / "restart", total)
    batch_id = deployment.submit(str(tmp_path / "restart"))

    with deployment.worker():
        assert wait_until(lambda: deployment.counts(batch_id)[ItemState.SUCCEEDED] >= 6, 60)
        private_redis.kill()  # every queued and unacked message is gone with it
        time.sleep(2)
        private_redis.start()
        assert deployment.wait_finished(batch_id, timeout=150), deployment.logs()

    assert deployment.counts(batch_id)[ItemState.SUCCEEDED] == total
    assert deployment.result_count(batch_id) == total
    paid = deployment.emulator.stats()["successes_per_image"]
    assert len(paid) == total
    # Calls in flight when the broker died may be paid twice; nothing else.
    assert sum(1 for count in paid.values() if count > 1) <= 4
