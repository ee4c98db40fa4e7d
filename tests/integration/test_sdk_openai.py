"""The official ``openai`` SDK against the emulator: the seed's examples, answers and errors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import cast

import openai
import pytest
from openai import OpenAI
from openai.types.chat import ChatCompletionMessageParam

from qocr.emulator.testing import EmulatorHandle, running_emulator, text_png
from qocr.qwen.images import to_data_url

pytestmark = pytest.mark.timeout(120)

# The seed's example, verbatim.
PROMPT_TICKET_EXTRACTION = """
Please extract the invoice number, train number, departure station, arrival station, departure date and time, seat number, seat class, ticket price, ID card number, and passenger name from the train ticket image.
You must accurately extract the key information. Do not omit or fabricate information. Replace any single character that is blurry or obscured by strong light with an English question mark (?).
Return the data in JSON format as follows: {'invoice_number': 'xxx', 'departure_station': 'xxx', 'arrival_station': 'xxx', 'departure_date_and_time':'xxx', 'seat_number': 'xxx','ticket_price':'xxx', 'id_card_number': 'xxx', 'passenger_name': 'xxx'},
"""  # noqa: E501
TICKET_KEYS = {
    "invoice_number",
    "departure_station",
    "arrival_station",
    "departure_date_and_time",
    "seat_number",
    "ticket_price",
    "id_card_number",
    "passenger_name",
}
TICKET_URL = (
    "https://img.alicdn.com/imgextra/i2/O1CN01ktT8451iQutqReELT_!!6000000004408-0-tps-689-487.jpg"
)
MODEL = "qwen-vl-ocr-2025-11-20"


def ticket_messages(url: str = TICKET_URL) -> list[ChatCompletionMessageParam]:
    # The seed's image part carries DashScope's min_pixels / max_pixels beside the OpenAI
    # keys; the SDK sends them as given, but its TypedDicts do not declare them.
    messages: list[dict[str, object]] = [
        {
            "role": "user",
            "content": [
                {
                    "type": "image_url",
                    "image_url": {"url": url},
                    "min_pixels": 32 * 32 * 3,
                    "max_pixels": 32 * 32 * 8192,
                },
                {"type": "text", "text": PROMPT_TICKET_EXTRACTION},
            ],
        }
    ]
    return cast("list[ChatCompletionMessageParam]", messages)


@pytest.fixture(scope="module")
def emulator() -> Iterator[EmulatorHandle]:
    with running_emulator(seed=1) as handle:
        yield handle


@pytest.fixture()
def client(emulator: EmulatorHandle) -> OpenAI:
    emulator.reset()
    return OpenAI(api_key="sk-test", base_url=emulator.compatible_base_url, max_retries=0)


def _json_block(text: str) -> dict[str, object]:
    assert text.startswith("```json\n") and text.endswith("\n```"), text
    value = json.loads(text[len("```json\n") : -len("\n```")])
    assert isinstance(value, dict)
    return value


def test_seed_non_streaming_example(client: OpenAI, emulator: EmulatorHandle) -> None:
    completion = client.chat.completions.create(model=MODEL, messages=ticket_messages())
    assert completion.object == "chat.completion" and completion.id.startswith("chatcmpl-")
    assert completion.model == MODEL
    choice = completion.choices[0]
    assert choice.finish_reason == "stop" and choice.message.role == "assistant"
    assert set(_json_block(choice.message.content or "")) == TICKET_KEYS
    usage = completion.usage
    assert usage is not None and usage.prompt_tokens_details is not None
    assert usage.prompt_tokens_details.image_tokens == 332  # the seed's figure for this image
    assert usage.completion_tokens_details is not None
    assert usage.completion_tokens_details.text_tokens == usage.completion_tokens
    assert usage.total_tokens == usage.prompt_tokens + usage.completion_tokens
    assert emulator.stats()["successes_per_image"] == {TICKET_URL: 1}


def test_seed_streaming_example(client: OpenAI) -> None:
    plain = client.chat.completions.create(model=MODEL, messages=ticket_messages())
    stream = client.chat.completions.create(
        model=MODEL,
        messages=ticket_messages(),
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    for chunk in chunks:
        json.loads(chunk.model_dump_json())  # as the seed prints them
    *content, usage_chunk = chunks
    assert chunks[0].choices[0].delta.role == "assistant"
    assert [c.choices[0].finish_reason for c in content][-2:] == [None, "stop"]
    text = "".join(c.choices[0].delta.content or "" for c in content)
    assert text == plain.choices[0].message.content
    assert usage_chunk.choices == [] and usage_chunk.usage is not None
    assert plain.usage is not None
    assert usage_chunk.usage.total_tokens == plain.usage.total_tokens
    assert len({c.id for c in chunks}) == 1


def test_data_url_and_extra_body(client: OpenAI, emulator: EmulatorHandle) -> None:
    image = to_data_url(text_png(["Invoice Number: 73311"]), "image/png")
    messages = ticket_messages(image)
    completion = client.chat.completions.create(
        model="qwen-vl-ocr-latest",
        messages=messages,
        temperature=0.01,
        top_p=0.001,
        seed=1,
        extra_body={"top_k": 1, "repetition_penalty": 1.0},
    )
    value = _json_block(completion.choices[0].message.content or "")["invoice_number"]
    # RapidOCR reads the number; the hash recognizer's words hold no such label.
    assert value == ("73311" if emulator.stats()["recognizer"] == "rapidocr" else "null")


def test_max_tokens_truncation(client: OpenAI) -> None:
    plain = client.chat.completions.create(model=MODEL, messages=ticket_messages(), max_tokens=5)
    assert plain.choices[0].finish_reason == "length"
    assert plain.usage is not None and plain.usage.completion_tokens == 5
    stream = client.chat.completions.create(
        model=MODEL,
        messages=ticket_messages(),
        max_tokens=5,
        stream=True,
    )
    chunks = list(stream)
    assert chunks[-1].choices[0].finish_reason == "length"
    assert (
        "".join(c.choices[0].delta.content or "" for c in chunks)
        == plain.choices[0].message.content
    )


def test_401_wrong_key() -> None:
    with running_emulator(api_key="sk-right") as emulator:
        client = OpenAI(api_key="sk-wrong", base_url=emulator.compatible_base_url, max_retries=0)
        with pytest.raises(openai.AuthenticationError) as caught:
            client.chat.completions.create(model=MODEL, messages=ticket_messages())
        with pytest.raises(openai.AuthenticationError):
            client.chat.completions.create(model=MODEL, messages=ticket_messages(), stream=True)
    assert caught.value.status_code == 401 and caught.value.code == "invalid_api_key"
    assert caught.value.type == "invalid_request_error"


def test_404_unknown_model(client: OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="qwen-vl-ocr-2099-01-01", messages=ticket_messages())
    assert caught.value.status_code == 404 and caught.value.code == "model_not_found"
    assert "qwen-vl-ocr-2099-01-01" in caught.value.message


def test_400_bad_image(client: OpenAI) -> None:
    tiny = to_data_url(text_png(["x"], font_size=3), "image/png")
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(model=MODEL, messages=ticket_messages(tiny))
    assert caught.value.status_code == 400 and caught.value.code == "invalid_parameter_error"
    assert "do not meet the model restrictions" in caught.value.message
    with pytest.raises(openai.BadRequestError) as gif:
        client.chat.completions.create(
            model=MODEL,
            messages=ticket_messages("data:image/gif;base64,R0lGODlhAQABAAAAACw="),
        )
    assert gif.value.code == "invalid_parameter_error"


def test_429_request_rate() -> None:
    with running_emulator(rpm=60, recognizer="hash") as emulator:
        client = OpenAI(api_key="sk-test", base_url=emulator.compatible_base_url, max_retries=0)
        client.chat.completions.create(model=MODEL, messages=ticket_messages())
        with pytest.raises(openai.RateLimitError) as caught:
            client.chat.completions.create(model=MODEL, messages=ticket_messages())
        assert emulator.stats()["successes"] == 1
    # A second request inside the same second: the service's per-second window.
    assert caught.value.status_code == 429 and caught.value.code == "limit_burst_rate"
    assert caught.value.type == "limit_burst_rate"


def test_error_inside_a_stream() -> None:
    with running_emulator(error_rate=1.0, recognizer="hash", seed=2) as emulator:
        client = OpenAI(api_key="sk-test", base_url=emulator.compatible_base_url, max_retries=0)
        stream = client.chat.completions.create(
            model=MODEL, messages=ticket_messages(), stream=True
        )
        with pytest.raises(openai.APIError) as caught:
            for _ in stream:
                pass
    assert caught.value.code in ("internal_error", "service_unavailable")


def test_dropped_connection_is_a_connection_error() -> None:
    with running_emulator(drop_rate=1.0, recognizer="hash") as emulator:
        client = OpenAI(api_key="sk-test", base_url=emulator.compatible_base_url, max_retries=0)
        with pytest.raises(openai.APIConnectionError):
            client.chat.completions.create(model=MODEL, messages=ticket_messages())
        assert emulator.stats()["drops"] == 1


def test_logprobs_plain_and_streamed_and_a_text_only_call(client: OpenAI) -> None:
    plain = client.chat.completions.create(
        model=MODEL,
        messages=ticket_messages(),
        logprobs=True,
        top_logprobs=2,
    )
    logprobs = plain.choices[0].logprobs
    assert logprobs is not None and logprobs.content
    assert "".join(t.token for t in logprobs.content) == plain.choices[0].message.content
    assert all(len(t.top_logprobs) == 2 for t in logprobs.content)
    streamed = client.chat.completions.create(
        model=MODEL,
        messages=ticket_messages(),
        logprobs=True,
        stream=True,
    )
    tokens = [
        entry.token
        for chunk in streamed
        if chunk.choices and chunk.choices[0].logprobs and chunk.choices[0].logprobs.content
        for entry in chunk.choices[0].logprobs.content
    ]
    assert "".join(tokens) == plain.choices[0].message.content
    text_only = client.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": "Say hello"}]
    )
    assert text_only.choices[0].message.content
    assert text_only.usage is not None
    assert text_only.usage.model_dump()["prompt_tokens_details"]["image_tokens"] == 0
