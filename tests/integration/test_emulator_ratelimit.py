"""--rpm 600 under load: 50 concurrent clients, a fixed request count, bounded in time.

The emulator must admit at most RPM/60 = 10 requests in any one-second window and answer
the rest 429 ``Throttling.BurstRate`` with the documented bodies (both APIs share the model's
window); its limits change while it runs (``POST /_limits``).
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from typing import Any

import httpx
import pytest

from qocr.emulator.testing import running_emulator, text_png
from qocr.qwen.images import to_data_url

pytestmark = pytest.mark.timeout(120)

RPM = 600
PER_SECOND = RPM // 60
CLIENTS = 50
REQUESTS = 1500  # fixed total; the deadline below stops the run earlier if the box is slow
DEADLINE_S = 15.0
PAUSE_S = 0.15  # per client: ~330 requests/s offered, 33x the limit

COMPATIBLE = "/compatible-mode/v1/chat/completions"
NATIVE = "/api/v1/services/aigc/multimodal-generation/generation"
IMAGE = to_data_url(text_png(["rate limit probe"], font_size=24), "image/png")
COMPATIBLE_BODY = {
    "model": "qwen-vl-ocr",
    "messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": IMAGE}}]}],
}
NATIVE_BODY = {
    "model": "qwen-vl-ocr",
    "input": {"messages": [{"role": "user", "content": [{"image": IMAGE}]}]},
}
BURST_MESSAGE = (
    "Request rate increased too quickly. To ensure system stability, please adjust your client "
    "logic to scale requests more smoothly over time."
)
COMPATIBLE_429 = {
    "message": BURST_MESSAGE,
    "type": "limit_burst_rate",
    "param": None,
    "code": "limit_burst_rate",
}
NATIVE_429 = ("Throttling.BurstRate", BURST_MESSAGE)


async def _load(base_url: str) -> tuple[list[tuple[str, int, Any]], float]:
    results: list[tuple[str, int, Any]] = []
    issued = 0
    start = time.monotonic()
    limits = httpx.Limits(max_connections=CLIENTS, max_keepalive_connections=CLIENTS)
    async with httpx.AsyncClient(base_url=base_url, timeout=20, limits=limits) as client:

        async def worker(index: int) -> None:
            nonlocal issued
            api = "compatible" if index % 2 else "native"
            while issued < REQUESTS and time.monotonic() - start < DEADLINE_S:
                issued += 1
                if api == "compatible":
                    response = await client.post(COMPATIBLE, json=COMPATIBLE_BODY)
                else:
                    response = await client.post(NATIVE, json=NATIVE_BODY)
                results.append((api, response.status_code, response.json()))
                await asyncio.sleep(PAUSE_S)

        await asyncio.gather(*(worker(i) for i in range(CLIENTS)))
    return results, time.monotonic() - start


def test_rpm_600_admits_at_most_10_per_second_and_throttles_the_rest() -> None:
    with running_emulator(rpm=RPM, recognizer="hash", seed=1) as emulator:
        results, elapsed = asyncio.run(_load(emulator.base_url))
        stats = emulator.stats()

    assert elapsed < DEADLINE_S + 5
    statuses = Counter(status for _, status, _ in results)
    assert set(statuses) == {200, 429}, statuses
    successes = statuses[200]
    assert len(results) >= 500  # the load really was many times the limit
    # Never more than the limit allows over the run, and not starved either.
    assert successes <= PER_SECOND * math.ceil(elapsed + 1)
    assert successes >= PER_SECOND * (elapsed - 1) * 0.5
    # The server's admission times: at most 10 in any one-second window, 600 in any minute.
    assert stats["successes"] == successes
    assert stats["max_successes_in_any_second"] <= PER_SECOND
    assert all(count <= RPM for count in stats["successes_per_minute"].values())
    assert all(count <= PER_SECOND for count in stats["successes_per_second"].values())
    # Every refusal is the documented 429 of its API.
    for api, status, body in results:
        if status != 429:
            continue
        if api == "compatible":
            assert body["error"] == COMPATIBLE_429 and body["request_id"]
        else:
            assert (body["code"], body["message"]) == NATIVE_429 and body["request_id"]
    throttled = Counter(api for api, status, _ in results if status == 429)
    assert stats["by_error_code"] == {
        "Throttling.BurstRate": throttled["native"],
        "limit_burst_rate": throttled["compatible"],
    }
    assert stats["requests"] == len(results)


def _burst(client: httpx.Client, count: int) -> list[int]:
    return [client.post(NATIVE, json=NATIVE_BODY).status_code for _ in range(count)]


def test_limits_change_while_the_emulator_runs() -> None:
    with (
        running_emulator(rpm=60, recognizer="hash") as emulator,
        httpx.Client(base_url=emulator.base_url, timeout=10) as client,
    ):
        assert client.get("/_limits").json() == {"rpm": 60, "tpm": None}
        assert _burst(client, 2) == [200, 429]  # one a second
        raised = client.post("/_limits", json={"rpm": 600})
        assert raised.json() == {"rpm": 600, "tpm": None}
        # Ten a second now; the one admitted before the change still counts.
        assert _burst(client, 10) == [200] * 9 + [429]
        refused = client.post("/_limits", json={"rpm": 0})
        assert refused.status_code == 400 and "rpm" in refused.json()["error"]
        assert emulator.set_limits(rpm=None) == {"rpm": None, "tpm": None}
        assert _burst(client, 20) == [200] * 20  # unlimited
        with pytest.raises(ValueError):
            emulator.set_limits(rpm=-1)
        assert client.get("/_limits").json() == {"rpm": None, "tpm": None}
