"""Request building for both APIs, checked against the seed's own curl examples."""

from __future__ import annotations

from typing import Any

import pytest

from qocr.qwen import RecognizeOptions
from qocr.qwen.request import build_request, compatible_body, native_body
from qocr.qwen.tasks import KIE_SCHEMA_PROMPT, PROMPTS, TASKS, Task
from tests.support.qwen_samples import API_KEY

TICKET_URL = (
    "https://img.alicdn.com/imgextra/i2/O1CN01ktT8451iQutqReELT_!!6000000004408-0-tps-689-487.jpg"
)
RECEIPT_URL = "http://duguang-labelling.oss-cn-shanghai.aliyuncs.com/demo_ocr/receipt_zh_demo.jpg"
TICKET_PROMPT = "Please extract the invoice number ... Return the data in JSON format."
SCHEMA = {
    "Ride Date": "Corresponds to the ride date and time in the image, in the format YYYY-MM-DD, "
    "for example, 2025-03-05",
    "Invoice Code": "Extract the invoice code from the image, usually a combination of numbers "
    "or letters",
    "Invoice Number": "Extract the number from the invoice, usually composed of only digits.",
}


def test_compatible_body_matches_the_seed_curl() -> None:
    options = RecognizeOptions(
        model="qwen-vl-ocr-2025-11-20", prompt=TICKET_PROMPT, min_pixels=3072, max_pixels=8388608
    )
    assert compatible_body(TICKET_URL, options) == {
        "model": "qwen-vl-ocr-2025-11-20",
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "type": "image_url",
                        "image_url": {"url": TICKET_URL},
                        "min_pixels": 3072,
                        "max_pixels": 8388608,
                    },
                    {"type": "text", "text": TICKET_PROMPT},
                ],
            }
        ],
    }


def test_compatible_stream_asks_for_usage_like_the_seed() -> None:
    options = RecognizeOptions(model="qwen-vl-ocr-2025-11-20", stream=True)
    body = compatible_body(TICKET_URL, options)
    assert body["stream"] is True
    assert body["stream_options"] == {"include_usage": True}
    # No prompt: no text part, the server's default prompt applies.
    assert len(body["messages"][0]["content"]) == 1


def test_native_kie_body_matches_the_seed_curl() -> None:
    options = RecognizeOptions(
        model="qwen-vl-ocr-2025-11-20",
        task="key_information_extraction",
        result_schema=SCHEMA,
        min_pixels=3072,
        max_pixels=8388608,
        enable_rotate=False,
    )
    assert native_body(RECEIPT_URL, options) == {
        "model": "qwen-vl-ocr-2025-11-20",
        "input": {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "image": RECEIPT_URL,
                            "min_pixels": 3072,
                            "max_pixels": 8388608,
                            "enable_rotate": False,
                        }
                    ],
                }
            ]
        },
        "parameters": {
            "ocr_options": {
                "task": "key_information_extraction",
                "task_config": {"result_schema": SCHEMA},
            }
        },
    }


@pytest.mark.parametrize("task", [t for t in TASKS if t != "key_information_extraction"])
def test_native_task_bodies_have_no_text_part(task: Task) -> None:
    options = RecognizeOptions(model="qwen-vl-ocr-2025-11-20", task=task)
    body = native_body("https://x/y.jpg", options)
    assert body["input"]["messages"][0]["content"] == [{"image": "https://x/y.jpg"}]
    assert body["parameters"] == {"ocr_options": {"task": task}}


def test_native_stream_matches_the_seed_curl() -> None:
    options = RecognizeOptions(
        model="qwen-vl-ocr-2025-11-20",
        prompt=TICKET_PROMPT,
        min_pixels=3072,
        max_pixels=8388608,
        stream=True,
    )
    request = build_request(
        "dashscope", "https://dashscope-intl.aliyuncs.com", API_KEY, TICKET_URL, options
    )
    assert request.url == (
        "https://dashscope-intl.aliyuncs.com/api/v1/services/aigc/multimodal-generation/generation"
    )
    assert request.headers["X-DashScope-SSE"] == "enable"
    assert request.headers["Authorization"] == f"Bearer {API_KEY}"
    assert request.json == {
        "model": "qwen-vl-ocr-2025-11-20",
        "input": {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"image": TICKET_URL, "min_pixels": 3072, "max_pixels": 8388608},
                        # The seed's curl adds "type": "text" here; its SDK examples and the
                        # parameter reference use the bare {"text": ...} item, as we do.
                        {"text": TICKET_PROMPT},
                    ],
                }
            ]
        },
        "parameters": {"incremental_output": True},
    }


SAMPLING: dict[str, Any] = {
    "max_tokens": 4096,
    "temperature": 0.01,
    "top_k": 1,
    "repetition_penalty": 1.0,
    "presence_penalty": 0.0,
    "seed": 1,
    "stop": ["</table>"],
    "logprobs": True,
    "top_logprobs": 2,
}


def test_sampling_parameters_reach_the_top_level_on_compatible() -> None:
    options = RecognizeOptions(model="qwen-vl-ocr-latest", **{**SAMPLING, "stop": ("</table>",)})
    body = compatible_body(TICKET_URL, options)
    for name, value in SAMPLING.items():
        assert body[name] == value
    request = build_request("compatible", "http://h", API_KEY, TICKET_URL, options)
    assert "X-DashScope-SSE" not in request.headers
    assert API_KEY not in repr(request)


def test_sampling_parameters_go_into_parameters_on_native() -> None:
    options = RecognizeOptions(
        model="qwen-vl-ocr-latest", top_p=0.5, **{**SAMPLING, "temperature": None, "stop": "END"}
    )
    parameters = native_body(TICKET_URL, options)["parameters"]
    assert parameters["top_p"] == 0.5
    assert parameters["stop"] == "END"
    assert parameters["max_tokens"] == 4096
    assert "temperature" not in parameters
    assert "incremental_output" not in parameters


@pytest.mark.parametrize("task", TASKS)
def test_compatible_maps_each_task_to_its_documented_prompt(task: Task) -> None:
    options = RecognizeOptions(model="qwen-vl-ocr-latest", task=task)
    content = compatible_body(TICKET_URL, options)["messages"][0]["content"]
    assert content[1] == {"type": "text", "text": PROMPTS[task]}


def test_compatible_kie_appends_the_schema_to_the_prompt() -> None:
    options = RecognizeOptions(
        model="qwen-vl-ocr-latest", task="key_information_extraction", result_schema=SCHEMA
    )
    text = compatible_body(RECEIPT_URL, options)["messages"][0]["content"][1]["text"]
    assert text.startswith(KIE_SCHEMA_PROMPT)
    assert text.endswith(
        '"Invoice Number": "Extract the number from the invoice, usually composed of only digits."}'
    )


def test_enable_rotate_sits_beside_the_pixel_bounds_on_compatible() -> None:
    options = RecognizeOptions(model="qwen-vl-ocr-latest", enable_rotate=True)
    part = compatible_body(TICKET_URL, options)["messages"][0]["content"][0]
    assert part == {"type": "image_url", "image_url": {"url": TICKET_URL}, "enable_rotate": True}
