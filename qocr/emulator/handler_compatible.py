"""``POST /compatible-mode/v1/chat/completions``: the OpenAI-compatible API."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from qocr.emulator import shapes_compatible as shapes
from qocr.emulator.calls import ApiName, OcrCall
from qocr.emulator.completion import Completion
from qocr.emulator.errors import ApiError
from qocr.emulator.parse_compatible import parse_compatible
from qocr.emulator.serving import serve

PATH = "/compatible-mode/v1/chat/completions"


class CompatibleAdapter:
    api: ApiName = "compatible"
    stream_content_type = "text/event-stream; charset=utf-8"

    def parse(self, body: object, request: web.Request) -> OcrCall:
        return parse_compatible(body)

    def sse_errors(self, request: web.Request) -> bool:
        # Compatible mode answers errors as JSON even to streaming requests.
        return False

    def error_code(self, error: ApiError) -> str:
        return shapes.error_code(error)

    def error_response(self, error: ApiError, request_id: str, *, sse: bool) -> web.Response:
        return web.json_response(
            shapes.error_body(error, request_id),
            status=error.status,
            headers={"X-Request-Id": request_id},
            dumps=shapes.dumps,
        )

    def response_body(self, completion: Completion) -> dict[str, Any]:
        return shapes.completion_body(completion)

    def stream_events(
        self, completion: Completion, call: OcrCall, chunk_tokens: int
    ) -> list[bytes]:
        return shapes.stream_events(
            completion, chunk_tokens_n=chunk_tokens, include_usage=call.include_usage
        )

    def stream_error(self, error: ApiError, request_id: str, index: int) -> bytes:
        return shapes.sse(shapes.error_body(error, request_id))


_ADAPTER = CompatibleAdapter()


async def chat_completions(request: web.Request) -> web.StreamResponse:
    return await serve(request, _ADAPTER)
