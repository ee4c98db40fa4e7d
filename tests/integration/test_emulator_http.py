"""The emulator on the wire (httpx on loopback): exact bodies, SSE framing, errors, images."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from qocr.emulator.testing import EmulatorHandle, running_emulator, text_png
from qocr.emulator.textunits import count_tokens
from qocr.qwen.images import to_data_url
from qocr.qwen.tokens import image_tokens

pytestmark = pytest.mark.timeout(120)

COMPATIBLE = "/compatible-mode/v1/chat/completions"
NATIVE = "/api/v1/services/aigc/multimodal-generation/generation"
PNG = text_png(["Invoice Number: 12345", "Total 99.50"])
PNG_URL = to_data_url(PNG, "image/png")
PUBLIC = (
    "https://img.alicdn.com/imgextra/i2/O1CN01ktT8451iQutqReELT_!!6000000004408-0-tps-689-487.jpg"
)


def compatible_body(url: str = PNG_URL, **extra: Any) -> dict[str, Any]:
    content = [{"type": "image_url", "image_url": {"url": url}}]
    return {
        "model": "qwen-vl-ocr-latest",
        "messages": [{"role": "user", "content": content}],
        **extra,
    }


def native_body(url: str = PNG_URL, **parameters: Any) -> dict[str, Any]:
    return {
        "model": "qwen-vl-ocr-latest",
        "input": {"messages": [{"role": "user", "content": [{"image": url}]}]},
        "parameters": parameters,
    }


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorHandle]:
    with running_emulator(recognizer="hash", seed=3, fetch_timeout_s=1.0) as handle:
        yield handle


@pytest.fixture()
def client(emulator: EmulatorHandle) -> Iterator[httpx.Client]:
    emulator.reset()
    with httpx.Client(base_url=emulator.base_url, timeout=30) as http:
        yield http


class _Images(BaseHTTPRequestHandler):
    """A loopback image host: good, missing, wrongly typed, length-less and slow images."""

    def do_GET(self) -> None:
        if self.path == "/ok.png":
            self._send(200, PNG, {"Content-Type": "image/png", "Content-Length": str(len(PNG))})
        elif self.path == "/text.png":
            self._send(200, PNG, {"Content-Type": "text/plain", "Content-Length": str(len(PNG))})
        elif self.path == "/nolength.png":
            self.close_connection = True
            self._send(200, PNG, {"Content-Type": "image/png"})
        elif self.path == "/slow.png":
            time.sleep(2.0)
            self._send(200, PNG, {"Content-Type": "image/png", "Content-Length": str(len(PNG))})
        else:
            self._send(404, b"not found", {"Content-Length": "9"})

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.protocol_version = "HTTP/1.0"
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:  # quiet
        return


@pytest.fixture(scope="module")
def image_host() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Images)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


# --- compatible mode ------------------------------------------------------------------------


def test_compatible_plain_answer(client: httpx.Client, emulator: EmulatorHandle) -> None:
    response = client.post(
        COMPATIBLE, json=compatible_body(), headers={"Authorization": "Bearer x"}
    )
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("application/json")
    body = response.json()
    assert body["object"] == "chat.completion" and body["id"].startswith("chatcmpl-")
    assert body["model"] == "qwen-vl-ocr-latest"
    choice = body["choices"][0]
    assert choice["finish_reason"] == "stop"
    text = choice["message"]["content"]
    assert text and "\n" in text  # the hash recognizer's lines
    usage = body["usage"]
    expected_image = image_tokens(*_size(PNG), "qwen-vl-ocr-latest")
    assert usage["prompt_tokens_details"]["image_tokens"] == expected_image
    assert usage["completion_tokens"] == count_tokens(text)
    assert usage["prompt_tokens"] == expected_image + usage["prompt_tokens_details"]["text_tokens"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    stats = emulator.stats()
    assert stats["successes"] == 1 and stats["by_status"] == {"200": 1}
    assert stats["tokens"]["total"] == usage["total_tokens"]


def _size(png: bytes) -> tuple[int, int]:
    # PNG IHDR: width and height are the big-endian ints at bytes 16-24.
    return int.from_bytes(png[16:20], "big"), int.from_bytes(png[20:24], "big")


def _sse_data(raw: str) -> list[str]:
    assert raw.endswith("\n\n")
    events = raw[:-2].split("\n\n")
    assert all(e.startswith("data: ") and "\n" not in e for e in events)
    return [e[len("data: ") :] for e in events]


@pytest.mark.parametrize("include_usage", [True, False])
def test_compatible_stream_framing(client: httpx.Client, include_usage: bool) -> None:
    body = compatible_body(stream=True, stream_options={"include_usage": include_usage})
    response = client.post(COMPATIBLE, json=body)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    data = _sse_data(response.text)
    assert data[-1] == "[DONE]"
    chunks = [json.loads(d) for d in data[:-1]]
    content = chunks[:-1] if include_usage else chunks
    assert [c["choices"][0]["finish_reason"] for c in content][-2:] == [None, "stop"]
    assert content[0]["choices"][0]["delta"]["role"] == "assistant"
    if include_usage:
        assert chunks[-1]["choices"] == [] and chunks[-1]["usage"]["total_tokens"] > 0
    else:
        assert all(c["usage"] is None for c in chunks)


def test_compatible_max_tokens_truncates_plain_and_streamed(client: httpx.Client) -> None:
    plain = client.post(COMPATIBLE, json=compatible_body(max_tokens=3)).json()
    assert plain["choices"][0]["finish_reason"] == "length"
    assert plain["usage"]["completion_tokens"] == 3
    body = compatible_body(max_tokens=3, stream=True, stream_options={"include_usage": True})
    chunks = [json.loads(d) for d in _sse_data(client.post(COMPATIBLE, json=body).text)[:-1]]
    assert chunks[-2]["choices"][0]["finish_reason"] == "length"
    text = "".join(c["choices"][0]["delta"]["content"] for c in chunks[:-1])
    assert text == plain["choices"][0]["message"]["content"]
    assert chunks[-1]["usage"]["completion_tokens"] == 3


def test_compatible_json_prompt(client: httpx.Client) -> None:
    body = compatible_body()
    prompt = "Return the data in JSON format as follows: {'invoice_number': 'xxx', 'seat': 'x'}"
    body["messages"][0]["content"].append({"type": "text", "text": prompt})
    text = client.post(COMPATIBLE, json=body).json()["choices"][0]["message"]["content"]
    assert text.startswith("```json\n") and text.endswith("\n```")
    assert set(json.loads(text[len("```json\n") : -len("\n```")])) == {"invoice_number", "seat"}


INVALID_REQUEST = "invalid_request_error"
TINY = to_data_url(text_png(["x"], font_size=4), "image/png")


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"messages": []}, 400, None),
        (compatible_body() | {"model": "qwen-vl-nope"}, 404, "model_not_found"),
        (compatible_body() | {"messages": None}, 400, "invalid_parameter_error"),
        (compatible_body() | {"temperature": "x"}, 400, "invalid_parameter_error"),
        (compatible_body(TINY), 400, "invalid_parameter_error"),
    ],
)
def test_compatible_errors(
    client: httpx.Client, body: dict[str, Any], status: int, code: str | None
) -> None:
    response = client.post(COMPATIBLE, json=body | {"stream": True})
    assert response.status_code == status
    assert response.headers["Content-Type"].startswith("application/json")  # even streamed
    payload = response.json()
    assert set(payload) == {"error", "request_id"}
    assert set(payload["error"]) == {"message", "type", "param", "code"}
    assert payload["error"]["code"] == code and payload["error"]["type"] == INVALID_REQUEST
    assert payload["request_id"] == response.headers["X-Request-Id"]


def test_malformed_json(client: httpx.Client) -> None:
    response = client.post(COMPATIBLE, content=b"{not json")
    assert response.status_code == 400
    assert "Required body invalid" in response.json()["error"]["message"]
    native = client.post(NATIVE, content=b"")
    assert native.status_code == 400 and native.json()["code"] == "InvalidParameter"


# --- native -----------------------------------------------------------------------------------


def test_native_plain_answer(client: httpx.Client) -> None:
    response = client.post(NATIVE, json=native_body(ocr_options={"task": "advanced_recognition"}))
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"output", "usage", "request_id"}
    choice = body["output"]["choices"][0]
    assert choice["finish_reason"] == "stop" and choice["message"]["role"] == "assistant"
    content = choice["message"]["content"][0]
    words = content["ocr_result"]["words_info"]
    assert [w["text"] for w in words] == content["text"].split("\n")
    usage = body["usage"]
    assert usage["image_tokens"] == usage["input_tokens_details"]["image_tokens"]
    assert (
        usage["input_tokens"]
        == usage["image_tokens"] + usage["input_tokens_details"]["text_tokens"]
    )
    assert usage["output_tokens"] == usage["output_tokens_details"]["text_tokens"]


def _native_events(raw: str) -> list[tuple[list[str], dict[str, Any]]]:
    assert raw.endswith("\n\n")
    events = []
    for block in raw[:-2].split("\n\n"):
        lines = block.split("\n")
        assert lines[-1].startswith("data:{")
        events.append((lines[:-1], json.loads(lines[-1][len("data:") :])))
    return events


@pytest.mark.parametrize("incremental", [True, False])
def test_native_stream(client: httpx.Client, incremental: bool) -> None:
    body = native_body(incremental_output=incremental)
    plain = client.post(NATIVE, json=native_body()).json()
    full = plain["output"]["choices"][0]["message"]["content"][0]["text"]
    response = client.post(NATIVE, json=body, headers={"X-DashScope-SSE": "enable"})
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/event-stream")
    events = _native_events(response.text)
    texts = []
    for index, (header, data) in enumerate(events, start=1):
        assert header == [f"id:{index}", "event:result", ":HTTP_STATUS/200"]
        choice = data["output"]["choices"][0]
        assert choice["finish_reason"] == ("stop" if index == len(events) else "null")
        texts.append(choice["message"]["content"][0]["text"])
    assert ("".join(texts) if incremental else texts[-1]) == full
    assert events[-1][1]["usage"] == plain["usage"]


def test_native_max_tokens_streamed(client: httpx.Client) -> None:
    body = native_body(max_tokens=2, incremental_output=True)
    events = _native_events(
        client.post(NATIVE, json=body, headers={"X-DashScope-SSE": "enable"}).text
    )
    assert events[-1][1]["output"]["choices"][0]["finish_reason"] == "length"
    assert events[-1][1]["usage"]["output_tokens"] == 2
    plain = client.post(NATIVE, json=native_body(max_tokens=2)).json()
    assert plain["output"]["choices"][0]["finish_reason"] == "length"


def test_native_kie_truncated_has_no_ocr_result(client: httpx.Client) -> None:
    kie = {"task": "key_information_extraction", "task_config": {"result_schema": {"a": ""}}}
    whole = client.post(NATIVE, json=native_body(ocr_options=kie)).json()
    assert "ocr_result" in whole["output"]["choices"][0]["message"]["content"][0]
    cut = client.post(NATIVE, json=native_body(ocr_options=kie, max_tokens=3)).json()
    assert "ocr_result" not in cut["output"]["choices"][0]["message"]["content"][0]


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        (native_body() | {"model": "qwen-vl-nope"}, 404, "ModelNotFound"),
        ({"model": "qwen-vl-ocr"}, 400, "BadRequest.EmptyInput"),
        (native_body(top_p=2), 400, "InvalidParameter"),
        (native_body("ftp://example.com/a.png"), 400, "InvalidParameter"),
    ],
)
@pytest.mark.parametrize("sse", [True, False])
def test_native_errors(
    client: httpx.Client, body: dict[str, Any], status: int, code: str, sse: bool
) -> None:
    headers = {"X-DashScope-SSE": "enable"} if sse else {}
    response = client.post(NATIVE, json=body, headers=headers)
    assert response.status_code == status
    if sse:
        assert response.headers["Content-Type"].startswith("text/event-stream")
        [(header, data)] = _native_events(response.text)
        assert header == ["id:1", "event:error", f":HTTP_STATUS/{status}"]
    else:
        assert response.headers["Content-Type"].startswith("application/json")
        data = response.json()
    assert set(data) == {"request_id", "code", "message"} and data["code"] == code


def test_unknown_path_and_method(client: httpx.Client) -> None:
    assert (
        client.post("/api/v1/services/aigc/text-generation/generation", json={}).status_code == 404
    )
    assert client.get(NATIVE).status_code == 405


# --- images -----------------------------------------------------------------------------------


def test_loopback_url_is_fetched(
    client: httpx.Client, image_host: str, emulator: EmulatorHandle
) -> None:
    by_url = client.post(NATIVE, json=native_body(f"{image_host}/ok.png")).json()
    by_data = client.post(NATIVE, json=native_body()).json()
    assert by_url["output"] == by_data["output"]  # same bytes, same answer
    assert by_url["usage"] == by_data["usage"]
    import hashlib

    assert emulator.stats()["successes_per_image"] == {hashlib.sha256(PNG).hexdigest(): 2}


DOWNLOAD = ("InvalidParameter.DataInspection", "Failed to download multimodal content")


@pytest.mark.parametrize(
    ("path", "status", "code", "compatible_message"),
    [
        ("/missing.png", 400, *DOWNLOAD),
        ("/slow.png", 400, *DOWNLOAD),
        ("/text.png", 400, "InvalidParameter", "Wrong Content-Type of multimodal url"),
        ("/nolength.png", 500, "InternalError.Algo", "Missing Content-Length of multimodal url."),
    ],
)
def test_loopback_url_failures(
    client: httpx.Client,
    image_host: str,
    path: str,
    status: int,
    code: str,
    compatible_message: str,
) -> None:
    native = client.post(NATIVE, json=native_body(image_host + path))
    assert native.status_code == status and native.json()["code"] == code
    compat = client.post(COMPATIBLE, json=compatible_body(image_host + path))
    assert compat.status_code == status
    assert compat.json()["error"]["message"] == compatible_message


def test_unreachable_loopback_port(client: httpx.Client) -> None:
    response = client.post(NATIVE, json=native_body("http://127.0.0.1:9/refused.png"))
    assert response.status_code == 400
    assert response.json() | {"request_id": ""} == {
        "request_id": "",
        "code": "InvalidParameter.DataInspection",
        "message": "Unable to download the media resource during the data inspection process.",
    }


def test_public_url_uses_the_placeholder(client: httpx.Client, emulator: EmulatorHandle) -> None:
    body = client.post(NATIVE, json=native_body(PUBLIC)).json()
    # The seed's streamed sample bills this 689×487 image 332 image tokens on -latest.
    assert body["usage"]["image_tokens"] == 332
    assert emulator.stats()["successes_per_image"] == {PUBLIC: 1}


def test_pixel_bounds_change_the_image_tokens(client: httpx.Client) -> None:
    big = client.post(NATIVE, json=native_body(PUBLIC)).json()["usage"]["image_tokens"]
    body = native_body(PUBLIC)
    body["input"]["messages"][0]["content"][0]["max_pixels"] = 32 * 32 * 100
    small = client.post(NATIVE, json=body).json()["usage"]["image_tokens"]
    assert small <= 102 < big


# --- /_stats ---------------------------------------------------------------------------------


def test_stats_and_reset(client: httpx.Client) -> None:
    client.post(COMPATIBLE, json=compatible_body())
    client.post(COMPATIBLE, json=compatible_body(model="nope"))
    client.post(NATIVE, json=native_body() | {"model": "nope"})
    stats = client.get("/_stats").json()
    assert stats["requests"] == 3 and stats["successes"] == 1
    assert stats["by_status"] == {"200": 1, "404": 2}
    assert stats["by_error_code"] == {"ModelNotFound": 1, "model_not_found": 1}
    assert stats["by_api"] == {"compatible": 2, "native": 1}
    assert len(stats["success_times"]) == 1 and stats["max_successes_in_any_second"] == 1
    assert sum(stats["successes_per_minute"].values()) == 1
    assert client.post("/_stats/reset").json() == {"reset": True}
    assert client.get("/_stats").json()["requests"] == 0
    assert client.get("/_health").json()["status"] == "ok"


# --- the reference, point by point (issue 16) -------------------------------------------------


def test_native_raw_body_has_the_references_text_finish_reason_and_characters(
    client: httpx.Client,
) -> None:
    body = client.post(NATIVE, json=native_body()).json()
    assert body["output"]["text"] is None and body["output"]["finish_reason"] is None
    assert body["output"]["choices"][0]["finish_reason"] == "stop"
    assert body["usage"]["characters"] == 0
    raw = client.post(NATIVE, json=native_body(), headers={"X-DashScope-SSE": "enable"}).text
    for _, event in _native_events(raw):
        assert event["output"]["text"] is None and event["usage"]["characters"] == 0


@pytest.mark.parametrize("seed", [0, 2**31 - 1, 2**31, 2**63 - 1, -1])
def test_seed_range_is_the_references_on_both_apis(client: httpx.Client, seed: int) -> None:
    native = client.post(NATIVE, json=native_body(seed=seed))
    compatible = client.post(COMPATIBLE, json=compatible_body(seed=seed))
    expected = 200 if 0 <= seed <= 2**31 - 1 else 400
    assert (native.status_code, compatible.status_code) == (expected, expected)
    if expected == 400:
        assert native.json()["message"] == "Range of seed should be [0, 2147483647]"


@pytest.mark.parametrize("content", ["Say hello", [{"text": "Say hello"}]])
def test_native_text_only_call_is_answered(client: httpx.Client, content: object) -> None:
    body = {
        "model": "qwen-vl-ocr-latest",
        "input": {"messages": [{"role": "user", "content": content}]},
    }
    response = client.post(NATIVE, json=body)
    assert response.status_code == 200, response.text
    answer = response.json()
    text = answer["output"]["choices"][0]["message"]["content"][0]["text"]
    assert text == "There is no image in the request, so there is no text to recognize."
    usage = answer["usage"]
    assert usage["image_tokens"] == 0 and usage["input_tokens"] == count_tokens("Say hello")
    streamed = client.post(NATIVE, json=body, headers={"X-DashScope-SSE": "enable"}).text
    events = _native_events(streamed)
    assert "".join(e["output"]["choices"][0]["message"]["content"][0]["text"] for _, e in events)
    compatible = client.post(
        COMPATIBLE,
        json={"model": "qwen-vl-ocr-latest", "messages": [{"role": "user", "content": "hi"}]},
    )
    assert compatible.status_code == 200
    assert compatible.json()["choices"][0]["message"]["content"] == text


def test_logprobs_are_returned_when_asked_and_refused_on_2024_10_28(client: httpx.Client) -> None:
    native = client.post(NATIVE, json=native_body(logprobs=True, top_logprobs=2)).json()
    choice = native["output"]["choices"][0]
    text = choice["message"]["content"][0]["text"]
    tokens = choice["logprobs"]["content"]
    assert "".join(t["token"] for t in tokens) == text
    assert all(len(t["top_logprobs"]) == 2 for t in tokens)
    compatible = client.post(COMPATIBLE, json=compatible_body(logprobs=True)).json()
    assert compatible["choices"][0]["logprobs"]["content"]
    plain = client.post(COMPATIBLE, json=compatible_body()).json()
    assert plain["choices"][0]["logprobs"] is None
    refused = client.post(
        NATIVE, json=native_body(logprobs=True) | {"model": "qwen-vl-ocr-2024-10-28"}
    )
    assert refused.status_code == 400
    assert refused.json()["message"] == (
        "The model qwen-vl-ocr-2024-10-28 does not support logprobs."
    )
    allowed = client.post(
        NATIVE, json=native_body(logprobs=False) | {"model": "qwen-vl-ocr-2024-10-28"}
    )
    assert allowed.status_code == 200


@pytest.mark.parametrize(
    ("model", "minimum"), [("qwen-vl-ocr-latest", 3072), ("qwen-vl-ocr", 3136)]
)
def test_min_pixels_under_the_models_minimum_is_refused(
    client: httpx.Client, model: str, minimum: int
) -> None:
    for min_pixels, status in ((minimum - 1, 400), (minimum, 200)):
        body = native_body() | {"model": model}
        body["input"]["messages"][0]["content"][0]["min_pixels"] = min_pixels
        response = client.post(NATIVE, json=body)
        assert response.status_code == status, response.text
    assert (
        f"must be at least {minimum}"
        in client.post(
            COMPATIBLE,
            json={
                "model": model,
                "messages": [
                    {
                        "role": "user",
                        "content": [
                            {
                                "type": "image_url",
                                "image_url": {"url": PNG_URL},
                                "min_pixels": minimum - 1,
                            }
                        ],
                    }
                ],
            },
        ).json()["error"]["message"]
    )
