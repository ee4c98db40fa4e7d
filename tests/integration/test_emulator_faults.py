"""Misbehaviour on demand: drops, injected errors, latency, API key, token rate, seeds."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

import httpx
import pytest

from qocr.emulator.testing import running_emulator, text_png
from qocr.qwen import APITimeoutError, QwenError, QwenOCRClient, ServerError
from qocr.qwen.catalog import Api
from qocr.qwen.images import to_data_url

pytestmark = pytest.mark.timeout(120)

COMPATIBLE = "/compatible-mode/v1/chat/completions"
NATIVE = "/api/v1/services/aigc/multimodal-generation/generation"
SSE = {"X-DashScope-SSE": "enable"}
IMAGE = to_data_url(text_png(["alpha beta gamma delta", "epsilon zeta eta theta"]), "image/png")


def compatible_body(**extra: Any) -> dict[str, Any]:
    content = [{"type": "image_url", "image_url": {"url": IMAGE}}]
    return {
        "model": "qwen-vl-ocr-latest",
        "messages": [{"role": "user", "content": content}],
        **extra,
    }


def native_body(**parameters: Any) -> dict[str, Any]:
    return {
        "model": "qwen-vl-ocr-latest",
        "input": {"messages": [{"role": "user", "content": [{"image": IMAGE}]}]},
        "parameters": parameters,
    }


def test_drops_close_the_connection_without_or_midway_through_a_response() -> None:
    with running_emulator(recognizer="hash", drop_rate=1.0) as emulator:
        with httpx.Client(base_url=emulator.base_url, timeout=10) as client:
            with pytest.raises(httpx.RemoteProtocolError, match="without sending a response"):
                client.post(COMPATIBLE, json=compatible_body())
            with pytest.raises(httpx.RemoteProtocolError, match="incomplete chunked read"):
                client.post(NATIVE, json=native_body(incremental_output=True), headers=SSE)
            received = []
            with (
                pytest.raises(httpx.RemoteProtocolError),
                client.stream("POST", COMPATIBLE, json=compatible_body(stream=True)) as response,
            ):
                assert response.status_code == 200
                for line in response.iter_lines():
                    received.append(line)
            assert any(line.startswith("data: {") for line in received)  # it had started
            assert "data: [DONE]" not in received
        stats = emulator.stats()
    assert stats["drops"] == 3 and stats["successes"] == 0 and stats["requests"] == 3
    assert stats["successes_per_image"] == {} and stats["tokens"]["total"] == 0


def test_injected_errors_in_both_apis_plain_and_streamed() -> None:
    with running_emulator(recognizer="hash", error_rate=1.0, seed=11) as emulator:
        with httpx.Client(base_url=emulator.base_url, timeout=10) as client:
            compat = client.post(COMPATIBLE, json=compatible_body())
            assert compat.status_code in (500, 503)
            expected = {
                500: ("internal_error", "InternalError"),
                503: ("service_unavailable", "ServiceUnavailable"),
            }
            assert compat.json()["error"]["code"] == expected[compat.status_code][0]
            assert compat.json()["error"]["type"] == expected[compat.status_code][0]

            native = client.post(NATIVE, json=native_body())
            assert native.status_code in (500, 503)
            assert native.json()["code"] == expected[native.status_code][1]

            streamed = client.post(NATIVE, json=native_body(incremental_output=True), headers=SSE)
            assert streamed.status_code == 200  # the error arrives inside the stream
            blocks = streamed.text.rstrip("\n").split("\n\n")
            *results, last = blocks
            assert results and all("\nevent:result\n" in b for b in results)
            header, data = last.rsplit("\n", 1)
            status = int(header.split(":HTTP_STATUS/")[1])
            assert "event:error" in header and status in (500, 503)
            assert json.loads(data[len("data:") :])["code"] == expected[status][1]

            compat_stream = client.post(COMPATIBLE, json=compatible_body(stream=True))
            events = compat_stream.text.rstrip("\n").split("\n\n")
            error = json.loads(events[-1][len("data: ") :])
            assert set(error) == {"error", "request_id"} and "data: [DONE]" not in events
        stats = emulator.stats()
    assert stats["successes"] == 0 and stats["requests"] == 4
    assert sum(stats["by_status"].get(s, 0) for s in ("500", "503")) == 4
    assert stats["tokens"]["total"] == 0


def test_latency_is_added_without_blocking_the_loop() -> None:
    async def burst(base_url: str) -> list[float]:
        async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:

            async def one() -> float:
                start = time.monotonic()
                response = await client.post(COMPATIBLE, json=compatible_body())
                assert response.status_code == 200
                return time.monotonic() - start

            return await asyncio.gather(*(one() for _ in range(10)))

    with running_emulator(recognizer="hash", latency_ms=(300, 400)) as emulator:
        start = time.monotonic()
        durations = asyncio.run(burst(emulator.base_url))
        elapsed = time.monotonic() - start
    assert all(d >= 0.3 for d in durations)
    assert elapsed < 2.0  # ten 300-400 ms sleeps overlapped (a blocking sleep takes >= 3 s)


def _statuses_and_ids(seed: int) -> list[tuple[int, str]]:
    with (
        running_emulator(recognizer="hash", error_rate=0.5, seed=seed) as emulator,
        httpx.Client(base_url=emulator.base_url, timeout=10) as client,
    ):
        return [
            (r.status_code, r.headers["X-Request-Id"])
            for r in (client.post(NATIVE, json=native_body()) for _ in range(16))
        ]


def test_same_seed_same_faults_and_ids() -> None:
    first = _statuses_and_ids(5)
    assert first == _statuses_and_ids(5)
    assert {s for s, _ in first} > {200}  # some failed, some did not
    assert first != _statuses_and_ids(6)


def test_wrong_or_missing_api_key_is_401_in_both_apis() -> None:
    with running_emulator(recognizer="hash", api_key="sk-right") as emulator:
        with httpx.Client(base_url=emulator.base_url, timeout=10) as client:
            wrong = {"Authorization": "Bearer sk-wrong"}
            compat = client.post(COMPATIBLE, json=compatible_body(), headers=wrong)
            assert compat.status_code == 401
            assert compat.json()["error"]["code"] == "invalid_api_key"
            native = client.post(NATIVE, json=native_body())  # no header at all
            assert native.status_code == 401
            assert native.json()["code"] == "InvalidApiKey"
            assert native.json()["message"] == "Invalid API-key provided."
            streamed = client.post(NATIVE, json=native_body(), headers={**wrong, **SSE})
            assert streamed.status_code == 401 and "event:error" in streamed.text
            right = {"Authorization": "Bearer sk-right"}
            assert client.post(NATIVE, json=native_body(), headers=right).status_code == 200
        stats = emulator.stats()
    assert stats["by_status"] == {"200": 1, "401": 3} and stats["successes"] == 1


def test_token_rate_limit_per_minute() -> None:
    with (
        running_emulator(recognizer="hash") as probe,
        httpx.Client(base_url=probe.base_url, timeout=10) as client,
    ):
        usage = client.post(NATIVE, json=native_body()).json()["usage"]
    per_request = usage["total_tokens"]
    # Room for two requests a minute: a third one's input tokens do not fit.
    tpm = 2 * per_request + usage["input_tokens"] // 2
    with running_emulator(recognizer="hash", tpm=tpm) as emulator:
        with httpx.Client(base_url=emulator.base_url, timeout=10) as client:
            first = [client.post(NATIVE, json=native_body()) for _ in range(5)]
            emulator.reset()  # a new minute's budget (the windows are forgotten)
            compat = [client.post(COMPATIBLE, json=compatible_body()) for _ in range(5)]
        stats = emulator.stats()
    assert [r.status_code for r in first] == [200, 200, 429, 429, 429]
    assert first[2].json() | {"request_id": ""} == {
        "request_id": "",
        "code": "Throttling.AllocationQuota",
        "message": "Allocated quota exceeded, please increase your quota limit.",
    }
    assert [r.status_code for r in compat] == [200, 200, 429, 429, 429]
    assert compat[2].json()["error"]["code"] == "insufficient_quota"
    assert compat[2].json()["error"]["type"] == "insufficient_quota"
    assert stats["successes"] == 2  # counted since the reset
    assert stats["by_error_code"] == {"insufficient_quota": 3}


# --- a hostile provider: hangs, trickles, over-long fields, switched while it runs ------------


def _client_call(base_url: str, api: Api, *, stream: bool = False) -> tuple[Exception, float]:
    started = time.monotonic()
    with QwenOCRClient("sk-test", api=api, base_url=base_url, deadline_seconds=1.0) as qwen:
        try:
            qwen.recognize(IMAGE, model="qwen-vl-ocr-latest", stream=stream)
        except QwenError as exc:
            return exc, time.monotonic() - started
    pytest.fail("the call should have failed")


@pytest.mark.parametrize("api", ["compatible", "dashscope"])
@pytest.mark.parametrize("stream", [False, True])
def test_a_hanging_provider_holds_the_call_until_the_client_gives_up(
    api: Api, stream: bool
) -> None:
    with running_emulator(recognizer="hash", hang_rate=1.0) as emulator:
        error, elapsed = _client_call(emulator.base_url, api, stream=stream)
        assert isinstance(error, APITimeoutError) and error.code == "deadline_exceeded"
        assert elapsed < 1.6
        stats = emulator.stats()
    assert stats["hangs"] == 1 and stats["successes"] == 0


@pytest.mark.parametrize("api", ["compatible", "dashscope"])
@pytest.mark.parametrize("stream", [False, True])
def test_a_trickling_provider_sends_a_200_that_never_ends_in_time(api: Api, stream: bool) -> None:
    with running_emulator(recognizer="hash", trickle_rate=1.0, trickle_interval_s=0.2) as emu:
        error, elapsed = _client_call(emu.base_url, api, stream=stream)
        assert isinstance(error, APITimeoutError) and error.code == "deadline_exceeded"
        assert elapsed < 1.6
        with (
            httpx.Client(base_url=emu.base_url, timeout=10) as client,
            client.stream("POST", COMPATIBLE, json=compatible_body(stream=stream)) as response,
        ):
            assert response.status_code == 200
            started = time.monotonic()
            received = b""
            for chunk in response.iter_raw():
                received += chunk
                if time.monotonic() - started > 1.0:
                    break
        if stream:
            assert received.count(b"data: {") == 1 and b": keep-alive\n\n" in received
        else:
            assert 2 <= len(received) <= 8  # one byte per 0.2 s
        time.sleep(0.3)  # the emulator notices the client left
        stats = emu.stats()
    assert stats["trickles"] == 2 and stats["successes"] == 0
    assert stats["by_status"] == {"499": 2} and stats["tokens"]["total"] == 0


def test_a_trickled_answer_that_is_waited_for_completes() -> None:
    with (
        running_emulator(recognizer="hash", trickle_rate=1.0, trickle_interval_s=0.001) as emu,
        httpx.Client(base_url=emu.base_url, timeout=30) as client,
    ):
        body = client.post(COMPATIBLE, json=compatible_body()).json()
        assert body["choices"][0]["message"]["content"]
        assert emu.stats()["successes"] == 1


@pytest.mark.parametrize("api", ["compatible", "dashscope"])
@pytest.mark.parametrize("stream", [False, True])
def test_over_long_fields_reach_the_client_cut(api: Api, stream: bool) -> None:
    with running_emulator(recognizer="hash", long_fields_rate=1.0) as emulator:
        path, body = (
            (COMPATIBLE, compatible_body()) if api == "compatible" else (NATIVE, native_body())
        )
        if not stream:
            raw = httpx.post(emulator.base_url + path, json=body, timeout=30)
            assert raw.status_code == 500
            data = raw.json()
            fields = (
                (data["error"]["code"], data["request_id"], data["error"]["message"])
                if api == "compatible"
                else (data["code"], data["request_id"], data["message"])
            )
            assert [len(f) for f in fields] == [300, 300, 5 * 1024 * 1024]
            assert len(raw.headers["X-Request-Id"]) == 300
        error, _ = _client_call(emulator.base_url, api, stream=stream)
    assert isinstance(error, ServerError) and error.retryable
    assert len(error.code) == 200 and len(error.request_id or "") == 200
    assert len(error.message) == 2048


def test_faults_are_switched_while_the_emulator_runs() -> None:
    with (
        running_emulator(recognizer="hash") as emulator,
        httpx.Client(base_url=emulator.base_url, timeout=10) as client,
    ):
        assert client.post(NATIVE, json=native_body()).status_code == 200
        outage = client.post("/_faults", json={"error_rate": 1.0})
        assert outage.status_code == 200 and outage.json()["error_rate"] == 1.0
        assert client.post(NATIVE, json=native_body()).status_code in (500, 503)
        assert client.get("/_faults").json()["error_rate"] == 1.0
        refused = client.post("/_faults", json={"hang_rate": 0.5})  # 1.5 in all
        assert refused.status_code == 400 and "must not exceed 1" in refused.json()["error"]
        assert client.post("/_faults", content=b"[1]").status_code == 400
        assert client.post("/_faults", json={"error_rate": 0}).json()["hang_rate"] == 0.0
        assert client.post(NATIVE, json=native_body()).status_code == 200
        assert emulator.set_faults(hang_rate=1.0)["hang_rate"] == 1.0
        assert emulator.faults()["hang_rate"] == 1.0


def test_a_held_request_does_not_delay_the_emulators_stop() -> None:
    caught: list[BaseException] = []

    def call(base_url: str) -> None:
        try:
            httpx.post(base_url + NATIVE, json=native_body(), timeout=30)
        except httpx.HTTPError as exc:
            caught.append(exc)

    with running_emulator(recognizer="hash", hang_rate=1.0) as emulator:
        thread = threading.Thread(target=call, args=(emulator.base_url,))
        thread.start()
        time.sleep(0.3)
        stopping = time.monotonic()
    assert time.monotonic() - stopping < 1.5
    thread.join(5)
    assert caught and isinstance(caught[0], httpx.RemoteProtocolError)
