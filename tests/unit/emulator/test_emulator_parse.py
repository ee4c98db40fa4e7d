"""Request validation of both APIs: the right status, code and message for each mistake."""

from __future__ import annotations

from typing import Any

import pytest

from qocr.emulator.errors import ApiError
from qocr.emulator.parse_compatible import parse_compatible
from qocr.emulator.parse_native import parse_native
from qocr.qwen.catalog import MODELS

IMAGE = (
    "https://img.alicdn.com/imgextra/i2/O1CN01ktT8451iQutqReELT_!!6000000004408-0-tps-689-487.jpg"
)


def compatible(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "qwen-vl-ocr-2025-11-20",
        "messages": [
            {
                "role": "user",
                "content": [
                    {
                        "type": "image_url",
                        "image_url": {"url": IMAGE},
                        "min_pixels": 3072,
                        "max_pixels": 8388608,
                    },
                    {"type": "text", "text": "Return JSON {'invoice_number': 'xxx'}"},
                ],
            }
        ],
    }
    body.update(overrides)
    return body


def native(parameters: dict[str, Any] | None = None, **overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": "qwen-vl-ocr-2025-11-20",
        "input": {
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {
                            "image": IMAGE,
                            "min_pixels": 3072,
                            "max_pixels": 8388608,
                            "enable_rotate": False,
                        }
                    ],
                }
            ]
        },
        "parameters": parameters or {},
    }
    body.update(overrides)
    if body.get("model") in MODELS and "input" not in overrides:
        # The model's own minimum: 3072 is under the 28-px models' 3136.
        image = body["input"]["messages"][0]["content"][0]
        image["min_pixels"] = MODELS[body["model"]].min_pixels
    return body


def test_compatible_valid_request() -> None:
    body = compatible(stream=True, stream_options={"include_usage": True}, max_tokens=100)
    call = parse_compatible(body)
    assert call.api == "compatible"
    assert call.model.name == "qwen-vl-ocr-2025-11-20"
    assert [(i.url, i.min_pixels, i.max_pixels) for i in call.images] == [(IMAGE, 3072, 8388608)]
    assert call.prompt == "Return JSON {'invoice_number': 'xxx'}"
    assert call.stream and call.include_usage and call.max_tokens == 100
    assert call.task is None


def test_compatible_defaults() -> None:
    body = compatible()
    body["messages"][0]["content"] = [{"type": "image_url", "image_url": {"url": IMAGE}}]
    call = parse_compatible(body)
    assert call.prompt is None  # the default prompt applies
    assert call.max_tokens == 8192 and not call.stream and not call.include_usage
    assert call.images[0].min_pixels is None


def test_compatible_include_usage_needs_stream() -> None:
    assert not parse_compatible(compatible(stream_options={"include_usage": True})).include_usage


def test_native_valid_request_with_task_ignores_the_text() -> None:
    body = native(
        {
            "ocr_options": {
                "task": "key_information_extraction",
                "task_config": {"result_schema": {"Invoice Code": "", "Seller": {"Name": ""}}},
            },
            "incremental_output": True,
            "max_tokens": 4096,
        }
    )
    body["input"]["messages"][0]["content"].append({"text": "ignored with a task"})
    call = parse_native(body, sse=True)
    assert call.api == "native" and call.stream and call.incremental_output
    assert call.task == "key_information_extraction"
    assert call.result_schema == {"Invoice Code": "", "Seller": {"Name": ""}}
    assert call.prompt is None
    assert call.max_tokens == 4096


def test_native_text_with_type_key_is_the_prompt() -> None:
    body = native()
    body["input"]["messages"][0]["content"].append({"type": "text", "text": "Read the ticket"})
    call = parse_native(body, sse=False)
    assert call.prompt == "Read the ticket" and not call.stream and call.task is None


def _error(parse: Any, body: object) -> ApiError:
    with pytest.raises(ApiError) as caught:
        parse(body)
    return caught.value


P = "invalid_parameter_error"


def user(content: object) -> list[dict[str, Any]]:
    return [{"role": "user", "content": content}]


def image_part(**extra: object) -> dict[str, Any]:
    return {"type": "image_url", "image_url": {"url": IMAGE}, **extra}


COMPATIBLE_ERRORS = [
    ("not an object", [1, 2], 400, P, "Required body invalid"),
    ("no model", compatible(model=None), 400, None, "you must provide a model parameter"),
    ("unknown model", compatible(model="qwen-vl-max"), 404, "model_not_found", "qwen-vl-max"),
    ("no messages", compatible(messages=None), 400, P, "Required parameter(messages)"),
    ("empty messages", compatible(messages=[]), 400, P, "[] is too short"),
    ("messages not a list", compatible(messages="hi"), 400, P, "valid list"),
    ("no user", compatible(messages=[{"role": "system", "content": "x"}]), 400, P, "role of user"),
    ("bad role", compatible(messages=[{"role": "robot", "content": "x"}]), 400, P, "'assistant'"),
    ("no content", compatible(messages=[{"role": "user"}]), 400, P, "content field is a required"),
    ("nothing to read", compatible(messages=user([])), 400, P, "any text or image"),
    (
        "min_pixels under the minimum",
        compatible(messages=user([image_part(min_pixels=3071)])),
        400,
        P,
        "min_pixels of the model qwen-vl-ocr-2025-11-20 must be at least 3072, got 3071",
    ),
    (
        "max_pixels over the cap",
        compatible(messages=user([image_part(max_pixels=30720001)])),
        400,
        P,
        "must be at most 30720000",
    ),
    (
        "logprobs unsupported",
        compatible(model="qwen-vl-ocr-2024-10-28", messages=user([image_part()]), logprobs=True),
        400,
        P,
        "does not support logprobs",
    ),
    ("seed too big", compatible(seed=2**31), 400, "invalid_value", "maximum of 2147483647"),
    (
        "bad part type",
        compatible(messages=user([{"type": "video"}])),
        400,
        P,
        "'text', 'image_url'",
    ),
    (
        "no image url",
        compatible(messages=user([{"type": "image_url", "image_url": {}}])),
        400,
        P,
        "image_url.url",
    ),
    ("max_tokens too big", compatible(max_tokens=8193), 400, P, "max_tokens should be [1, 8192]"),
    ("max_tokens zero", compatible(max_tokens=0), 400, P, "Range of max_tokens"),
    ("max_tokens string", compatible(max_tokens="10"), 400, P, "Range of max_tokens"),
    ("temperature string", compatible(temperature="hot"), 400, P, "'temperature' must be Float"),
    (
        "temperature range",
        compatible(temperature=2.0),
        400,
        P,
        "Temperature should be in [0.0, 2.0)",
    ),
    ("top_p range", compatible(top_p=0), 400, P, "Range of top_p should be (0.0, 1.0]"),
    ("top_k negative", compatible(top_k=-1), 400, P, "top_k be greater than or equal to 0"),
    ("presence range", compatible(presence_penalty=3), 400, P, "Presence_penalty"),
    ("repetition range", compatible(repetition_penalty=0), 400, P, "Repetition_penalty"),
    ("seed negative", compatible(seed=-1), 400, "invalid_value", "-1 is lesser than the minimum"),
    ("seed float", compatible(seed=1.5), 400, "invalid_value", "'seed' must be Integer"),
    ("stream not bool", compatible(stream="yes"), 400, P, "valid boolean: stream"),
    ("stream_options type", compatible(stream_options=[1]), 400, P, "stream_options"),
    ("stop mixed", compatible(stop=["a", 1]), 400, P, '"stop" parameter'),
    ("pixels type", compatible(messages=user([image_part(min_pixels="x")])), 400, P, "min_pixels"),
    ("top_logprobs range", compatible(top_logprobs=6), 400, P, "top_logprobs"),
]


@pytest.mark.parametrize(
    ("case", "body", "status", "code", "message"),
    COMPATIBLE_ERRORS,
    ids=[c[0] for c in COMPATIBLE_ERRORS],
)
def test_compatible_errors(
    case: str, body: object, status: int, code: str | None, message: str
) -> None:
    error = _error(parse_compatible, body)
    assert error.status == status
    assert error.spec.compatible_code == code
    assert message in error.spec.compatible_message


IP = "InvalidParameter"


def native_content(content: list[dict[str, Any]]) -> dict[str, Any]:
    return native(input={"messages": user(content)})


def kie(schema: object) -> dict[str, Any]:
    task = {"task": "key_information_extraction", "task_config": {"result_schema": schema}}
    return native({"ocr_options": task})


NATIVE_ERRORS = [
    ("no model", native(model=""), 400, "BadRequest.EmptyModel", '"model" missing'),
    ("unknown model", native(model="qwen-plus"), 404, "ModelNotFound", "qwen-plus"),
    ("no input", native(input=None), 400, "BadRequest.EmptyInput", "input parameter missing"),
    ("no messages", native(input={}), 400, IP, 'Either "prompt" or "messages" must exist'),
    ("messages at top", {"model": "qwen-vl-ocr", "messages": []}, 400, "BadRequest.EmptyInput", ""),
    ("bad modality", native_content([{"foo": 1}]), 400, IP, "certain modal"),
    ("video", native_content([{"video": "x"}]), 400, IP, "media format"),
    ("parameters type", {**native(), "parameters": [1]}, 400, IP, "parameters"),
    ("unknown task", native({"ocr_options": {"task": "poetry"}}), 400, IP, "ocr_options.task"),
    ("missing task", native({"ocr_options": {}}), 400, IP, "ocr_options.task"),
    (
        "task on 2024-10-28",
        native({"ocr_options": {"task": "text_recognition"}}, model="qwen-vl-ocr-2024-10-28"),
        400,
        IP,
        "not supported",
    ),
    ("schema too deep", kie({"a": {"b": {"c": {"d": ""}}}}), 400, IP, "3 levels"),
    ("schema type", kie("x"), 400, IP, "result_schema"),
    (
        "max_tokens old model",
        native({"max_tokens": 5000}, model="qwen-vl-ocr"),
        400,
        IP,
        "Range of max_tokens should be [1, 4096]",
    ),
    ("seed range", native({"seed": -5}), 400, IP, "Range of seed should be [0, 2147483647]"),
    (
        "seed over 2^31-1",
        native({"seed": 2**31}),
        400,
        IP,
        "Range of seed should be [0, 2147483647]",
    ),
    (
        "min_pixels under the 28-px minimum",
        native_content([{"image": IMAGE, "min_pixels": 3072}]) | {"model": "qwen-vl-ocr"},
        400,
        IP,
        "min_pixels of the model qwen-vl-ocr must be at least 3136, got 3072",
    ),
    (
        "max_pixels over the cap",
        native_content([{"image": IMAGE, "max_pixels": 30720001}]),
        400,
        IP,
        "must be at most 30720000",
    ),
    (
        "logprobs unsupported",
        native({"logprobs": True}, model="qwen-vl-ocr-2024-10-28"),
        400,
        IP,
        "The model qwen-vl-ocr-2024-10-28 does not support logprobs.",
    ),
    ("nothing to read", native_content([]), 400, IP, "any text or image"),
    ("incremental type", native({"incremental_output": "yes"}), 400, IP, "incremental_output"),
    (
        "enable_rotate type",
        native_content([{"image": IMAGE, "enable_rotate": "no"}]),
        400,
        IP,
        "enable_rotate",
    ),
]


@pytest.mark.parametrize(
    ("case", "body", "status", "code", "message"), NATIVE_ERRORS, ids=[c[0] for c in NATIVE_ERRORS]
)
def test_native_errors(case: str, body: object, status: int, code: str, message: str) -> None:
    error = _error(lambda b: parse_native(b, sse=False), body)
    assert error.status == status
    assert error.spec.code == code
    assert message in error.spec.message


@pytest.mark.parametrize("content", ["Say hello", [{"text": "Say hello"}]])
def test_native_text_only_call_is_accepted(content: object) -> None:
    # Issue 16.4: the reference allows a content that is a plain string (text only).
    call = parse_native(native(input={"messages": user(content)}), sse=False)
    assert call.images == () and call.prompt == "Say hello"


def test_compatible_text_only_call_is_accepted() -> None:
    call = parse_compatible(compatible(messages=user("hello")))
    assert call.images == () and call.prompt == "hello"


def test_pixel_bounds_at_the_documented_limits_are_accepted() -> None:
    for model, spec in MODELS.items():
        part = {"image": IMAGE, "min_pixels": spec.min_pixels, "max_pixels": spec.max_pixels_cap}
        call = parse_native(native_content([part]) | {"model": model}, sse=False)
        assert call.images[0].min_pixels == spec.min_pixels


def test_logprobs_and_rotation_are_read() -> None:
    body = native({"logprobs": True, "top_logprobs": 3})
    body["input"]["messages"][0]["content"][0]["enable_rotate"] = True
    call = parse_native(body, sse=False)
    assert (call.logprobs, call.top_logprobs, call.images[0].enable_rotate) == (True, 3, True)
    plain = parse_compatible(compatible(logprobs=False, top_logprobs=3))
    assert (plain.logprobs, plain.top_logprobs, plain.images[0].enable_rotate) == (False, 0, False)
    rotated = parse_compatible(compatible(messages=user([image_part(enable_rotate=True)])))
    assert rotated.images[0].enable_rotate
