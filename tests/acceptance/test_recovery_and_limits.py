"""Crashes and limits with real worker processes: SIGKILL mid-batch, two workers under an RPM."""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import pytest

from qocr.models import ItemState
from tests.support.images import write_pngs
from tests.support.pipeline import MakeDeployment

pytestmark = pytest.mark.timeout(300)


def test_two_workers_share_one_rpm_limit(deploy: MakeDeployment, tmp_path: Path) -> None:
    rpm = 120
    deployment = deploy(rpm=rpm, latency_ms=(100, 400), seed=5)
    total = 50
    write_pngs(tmp_path / "rate", total)
    batch_id = deployment.submit(str(tmp_path / "rate"))
    limit = {"QOCR_RPM": str(rpm)}
    with deployment.worker(name="a", **limit), deployment.worker(name="b", **limit):
        assert deployment.wait_finished(batch_id, timeout=150), deployment.logs()

    assert deployment.counts(batch_id)[ItemState.SUCCEEDED] == total
    stats = deployment.emulator.stats()
    times = sorted(stats["success_times"])
    per_second = max(Counter(int(t) for t in times).values())
    in_any_minute = max(sum(1 for t in times if start <= t < start + 60) for start in times)
    assert per_second <= rpm // 60
    assert in_any_minute <= rpm
    # The throttle spaces calls 1 % under the limit, so a call may arrive up to ~10 ms late
    # before the service's one-second window overflows (the strict emulator counts each
    # request when it arrives); a call later than that takes a new slot, but on a loaded
    # 2-core test machine a few still arrive late. They stay rare (bench/ measures the share).
    throttled = stats["by_status"].get("429", 0)
    assert throttled <= 0.1 * stats["requests"]
