"""The Batch API's endpoints under ``/compatible-mode/v1``: files and batches, as the
OpenAI SDK calls them (``client.files.*``, ``client.batches.*``). The service behind
them is :mod:`qocr.emulator.batch_jobs`; each line runs through the realtime pipeline's
steps (parse, load, read, answer), outside the realtime rate limits.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

from aiohttp import web

from qocr.emulator import shapes_compatible as shapes
from qocr.emulator.batch_jobs import BatchApiError, BatchService
from qocr.emulator.errors import ApiError
from qocr.emulator.parse_compatible import parse_compatible
from qocr.emulator.pipeline import complete, load_images, read_text
from qocr.emulator.serving import check_api_key
from qocr.emulator.state import STATE, EmulatorState
from qocr.qwen.batch_limits import MAX_FILE_BYTES, TEST_MODEL

ROOT = "/compatible-mode/v1"
BATCHES = web.AppKey("qocr_emulator_batches", BatchService)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def make_service(state: EmulatorState) -> BatchService:
    async def run_line(body: Mapping[str, Any], request_id: str) -> tuple[int, dict[str, Any]]:
        if body.get("model") == TEST_MODEL:
            return 200, _test_reply(state, request_id)
        try:
            call = parse_compatible(body)
            images = await load_images(state.images, call)
            lines = await read_text(state.recognizer, call, images)
            completion = complete(
                call, images, lines, request_id=request_id, completion_id=state.ids.completion_id()
            )
        except ApiError as error:
            return error.status, shapes.error_body(error, request_id)
        usage = completion.usage
        state.stats.success(
            admitted_at=0.0,
            image_keys=[image.stats_key for image in images],
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            image_tokens=usage.image_tokens,
        )
        return 200, shapes.completion_body(completion)

    config = state.config
    return BatchService(
        run_line,
        lambda prefix: prefix + state.ids.request_id().replace("-", "")[:24],
        lines_per_second=config.batch_lines_per_second,
        window_seconds=config.batch_window_seconds,
    )


def _test_reply(state: EmulatorState, request_id: str) -> dict[str, Any]:
    return {
        "id": request_id,
        "object": "chat.completion",
        "created": 0,
        "model": TEST_MODEL,
        "choices": [
            {
                "index": 0,
                "finish_reason": "stop",
                "message": {"role": "assistant", "content": "This is a test result."},
            }
        ],
        "usage": {"prompt_tokens": 0, "completion_tokens": 0, "total_tokens": 0},
    }


def add_routes(app: web.Application) -> None:
    app.router.add_post(f"{ROOT}/files", _guarded(upload_file))
    app.router.add_get(f"{ROOT}/files", _guarded(list_files))
    app.router.add_get(f"{ROOT}/files/{{file_id}}", _guarded(get_file))
    app.router.add_get(f"{ROOT}/files/{{file_id}}/content", _guarded(file_content))
    app.router.add_delete(f"{ROOT}/files/{{file_id}}", _guarded(delete_file))
    app.router.add_post(f"{ROOT}/batches", _guarded(create_batch))
    app.router.add_get(f"{ROOT}/batches", _guarded(list_batches))
    app.router.add_get(f"{ROOT}/batches/{{batch_id}}", _guarded(get_batch))
    app.router.add_post(f"{ROOT}/batches/{{batch_id}}/cancel", _guarded(cancel_batch))
    app.router.add_get("/_batch_faults", batch_faults)
    app.router.add_post("/_batch_faults", batch_faults)


def _guarded(handler: Handler) -> Handler:
    """The API key check and the compatible error body around a handler."""

    async def guarded(request: web.Request) -> web.StreamResponse:
        state = request.app[STATE]
        request_id = state.ids.request_id()
        try:
            check_api_key(request, state.config.api_key)
            return await handler(request)
        except ApiError as error:
            return web.json_response(shapes.error_body(error, request_id), status=error.status)
        except BatchApiError as error:
            body = {
                "error": {
                    "message": error.message,
                    "type": "invalid_request_error",
                    "param": None,
                    "code": error.code,
                },
                "request_id": request_id,
            }
            return web.json_response(body, status=error.status)

    return guarded


def _service(request: web.Request) -> BatchService:
    return request.app[BATCHES]


async def upload_file(request: web.Request) -> web.StreamResponse:
    if request.content_length is not None and request.content_length > MAX_FILE_BYTES + 65536:
        raise BatchApiError(400, "InvalidParameter", "the file is larger than 500 MB")
    form = await request.post()
    upload = form.get("file")
    purpose = form.get("purpose")
    if not isinstance(upload, web.FileField):
        raise BatchApiError(400, "InvalidParameter", "a multipart 'file' part is required")
    data = upload.file.read()
    stored = await _service(request).upload(upload.filename, str(purpose or ""), data)
    return web.json_response(stored.document())


async def list_files(request: web.Request) -> web.StreamResponse:
    query = request.query
    limit = _limit(query.get("limit"), 10_000)
    files = _service(request).list_files(query.get("purpose"), limit, query.get("order") != "asc")
    return web.json_response(
        {"object": "list", "data": [f.document() for f in files], "has_more": False}
    )


async def get_file(request: web.Request) -> web.StreamResponse:
    return web.json_response(_service(request).file(request.match_info["file_id"]).document())


async def file_content(request: web.Request) -> web.StreamResponse:
    stored = _service(request).file(request.match_info["file_id"])
    return web.Response(body=stored.data, content_type="application/octet-stream")


async def delete_file(request: web.Request) -> web.StreamResponse:
    return web.json_response(_service(request).delete_file(request.match_info["file_id"]))


async def create_batch(request: web.Request) -> web.StreamResponse:
    try:
        body = json.loads(await request.read())
    except ValueError:
        raise BatchApiError(400, "InvalidParameter", "the body is not JSON") from None
    return web.json_response(_service(request).create(body).document())


async def list_batches(request: web.Request) -> web.StreamResponse:
    ids = request.query.get("input_file_ids")
    wanted = [i for i in ids.split(",") if i] if ids else None
    batches = _service(request).list_batches(wanted, _limit(request.query.get("limit"), 100))
    return web.json_response(
        {"object": "list", "data": [b.document() for b in batches], "has_more": False}
    )


async def get_batch(request: web.Request) -> web.StreamResponse:
    return web.json_response(_service(request).batch(request.match_info["batch_id"]).document())


async def cancel_batch(request: web.Request) -> web.StreamResponse:
    return web.json_response(_service(request).cancel(request.match_info["batch_id"]).document())


async def batch_faults(request: web.Request) -> web.StreamResponse:
    """``GET``: the batch faults in force; ``POST {plans, upload_delays}``: change them."""
    service = _service(request)
    changes: Any = {}
    if request.method == "POST":
        try:
            changes = json.loads(await request.read() or b"{}")
            if not isinstance(changes, dict):
                raise ValueError("a JSON object is expected")
            result = service.faults.update(changes)
        except ValueError as exc:
            return web.json_response({"error": str(exc)}, status=400)
    else:
        result = service.faults.update({})
    return web.json_response(result)


def _limit(value: str | None, default: int) -> int:
    try:
        return max(1, int(value)) if value is not None else default
    except ValueError:
        return default
