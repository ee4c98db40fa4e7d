"""``POST /api/v1/services/aigc/multimodal-generation/generation``: the DashScope API."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from qocr.emulator import shapes_native as shapes
from qocr.emulator.calls import ApiName, OcrCall
from qocr.emulator.completion import Completion
from qocr.emulator.errors import ApiError
from qocr.emulator.parse_native import parse_native
from qocr.emulator.serving import serve

PATH = "/api/v1/services/aigc/multimodal-generation/generation"


def wants_sse(request: web.Request) -> bool:
    return request.headers.get("X-DashScope-SSE", "").strip().lower() == "enable"


class NativeAdapter:
    api: ApiName = "native"
    stream_content_type = shapes.SSE_CONTENT_TYPE

    def parse(self, body: object, request: web.Request) -> OcrCall:
        return parse_native(body, sse=wants_sse(request))

    def sse_errors(self, request: web.Request) -> bool:
        # A streaming request gets its error as one event:error block, with the HTTP status.
        return wants_sse(request)

    def error_code(self, error: ApiError) -> str:
        return error.spec.code

    def error_response(self, error: ApiError, request_id: str, *, sse: bool) -> web.Response:
        headers = {"X-Request-Id": request_id}
        if sse:
            return web.Response(
                body=shapes.error_event(1, error, request_id),
                status=error.status,
                headers={**headers, "Content-Type": shapes.SSE_CONTENT_TYPE},
            )
        return web.json_response(
            shapes.error_body(error, request_id),
            status=error.status,
            headers=headers,
            dumps=shapes.dumps,
        )

    def response_body(self, completion: Completion) -> dict[str, Any]:
        return shapes.response_body(completion)

    def stream_events(
        self, completion: Completion, call: OcrCall, chunk_tokens: int
    ) -> list[bytes]:
        return shapes.stream_events(
            completion, chunk_tokens_n=chunk_tokens, incremental=call.incremental_output
        )

    def stream_error(self, error: ApiError, request_id: str, index: int) -> bytes:
        return shapes.error_event(index, error, request_id)


_ADAPTER = NativeAdapter()


async def generation(request: web.Request) -> web.StreamResponse:
    return await serve(request, _ADAPTER)
