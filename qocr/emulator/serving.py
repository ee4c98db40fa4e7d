"""The story of one API request, whichever API: the same steps, the API's own words.

auth → parse and validate → request-rate windows → fault plan and latency → images → token
window → recognition and answer → JSON body or SSE stream. The rate windows count a request
at its arrival (when its handler starts), before its body is read. Each API plugs in through an
:class:`ApiAdapter` (:mod:`~qocr.emulator.handler_compatible`,
:mod:`~qocr.emulator.handler_native`). Injected faults: a dropped request closes the socket
without a response (or, streamed, halfway through the events); an injected error is a 500/503
body (or, streamed, an error event after the first half of the events); an over-long error
(``long_fields``) is the same with a 300-character code and request id and a 5 MB message; a
hung request is never answered; a trickled one gets its 200 and then its body one byte (or
its stream one keep-alive comment) per interval (:mod:`~qocr.emulator.hostile`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import dataclass
from typing import Any, Protocol

from aiohttp import web

from qocr.emulator import errors, hostile
from qocr.emulator.calls import ApiName, OcrCall
from qocr.emulator.completion import Completion
from qocr.emulator.errors import ApiError
from qocr.emulator.faults import Plan
from qocr.emulator.limits import Admission, Throttled
from qocr.emulator.pipeline import complete, input_tokens, load_images, read_text
from qocr.emulator.state import STATE, EmulatorState
from qocr.qwen.errors import ImageError
from qocr.qwen.images import decode_data_url

MAX_BODY_BYTES = 32 * 1024 * 1024  # a 10 MiB data URL and its JSON fit comfortably
CLIENT_CLOSED = (499, "ClientClosedRequest")  # the client left mid-stream (nginx's 499)


class ApiAdapter(Protocol):
    """What differs between the two APIs: parsing, body shapes, error spelling, SSE framing."""

    api: ApiName
    stream_content_type: str

    def parse(self, body: object, request: web.Request) -> OcrCall: ...

    def sse_errors(self, request: web.Request) -> bool: ...

    def error_code(self, error: ApiError) -> str: ...

    def error_response(self, error: ApiError, request_id: str, *, sse: bool) -> web.Response: ...

    def response_body(self, completion: Completion) -> dict[str, Any]: ...

    def stream_events(
        self, completion: Completion, call: OcrCall, chunk_tokens: int
    ) -> list[bytes]: ...

    def stream_error(self, error: ApiError, request_id: str, index: int) -> bytes: ...


@dataclass(frozen=True)
class Admitted:
    """A request past validation and the request-rate window."""

    call: OcrCall
    plan: Plan
    admitted_at: float  # wall clock, for /_stats


@dataclass(frozen=True)
class Computed:
    completion: Completion
    reservation: Admission
    image_keys: list[str]


async def serve(request: web.Request, adapter: ApiAdapter) -> web.StreamResponse:
    state = request.app[STATE]
    state.stats.request(adapter.api)
    request_id = state.ids.request_id()
    try:
        admitted = await admit(request, state, adapter)
        fault = admitted.plan.fault
        if fault == "hang":
            return await hostile.hang(request, state)
        if fault == "drop" and not admitted.call.stream:
            return drop(request, state)
        if fault == "error" and not admitted.call.stream:
            raise injected_error(admitted.plan)
        if fault == "long_fields" and not admitted.call.stream:
            error, request_id = hostile.over_long_error(request_id)
            raise error
        computed = await compute(state, admitted.call, request_id)
    except ApiError as error:
        state.stats.error(error.status, adapter.error_code(error))
        return adapter.error_response(error, request_id, sse=adapter.sse_errors(request))
    if admitted.call.stream:
        return await stream(request, state, adapter, admitted, computed, request_id)
    if fault == "trickle":
        body = _dumps(adapter.response_body(computed.completion)).encode()
        response = web.StreamResponse(
            headers={"Content-Type": "application/json", "X-Request-Id": request_id}
        )
        pieces = [body[i : i + 1] for i in range(len(body))]
        return await trickled(request, state, admitted, computed, response, pieces)
    record_success(state, admitted, computed)
    return web.json_response(
        adapter.response_body(computed.completion),
        headers={"X-Request-Id": request_id},
        dumps=_dumps,
    )


async def admit(
    request: web.Request,
    state: EmulatorState,
    adapter: ApiAdapter,
) -> Admitted:
    check_api_key(request, state.config.api_key)
    call = adapter.parse(await read_json(request), request)
    # A request counts in the windows when the server decides on it, its body read, so the
    # windows' times only grow. Stamped at its arrival instead, a request whose body came
    # slowly was counted into a second that later requests had filled, after the window had
    # already let go of them: 11 admitted in one second at RPM 600, seen under load.
    decided, decided_wall = time.monotonic(), time.time()
    throttled = state.limits.admit_request(call.model.name, decided)
    if throttled is Throttled.BURST_RATE:
        raise errors.burst_rate_exceeded()
    if throttled is Throttled.RATE_QUOTA:
        raise errors.request_rate_exceeded()
    state.stats.admitted([request_key(image.url) for image in call.images])
    plan = state.faults.plan()
    if plan.latency_s > 0:
        await asyncio.sleep(plan.latency_s)
    return Admitted(call, plan, decided_wall)


def request_key(url: str) -> str:
    """How ``/_stats`` names an image before loading it: the sha256 of a data URL's bytes
    (as a success names it), else the URL."""
    if url.startswith("data:"):
        try:
            return hashlib.sha256(decode_data_url(url)[1]).hexdigest()
        except (ImageError, ValueError):
            return "invalid"
    return url


def check_api_key(request: web.Request, expected: str | None) -> None:
    if expected is None:
        return
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or token.strip() != expected:
        raise errors.invalid_api_key()


async def read_json(request: web.Request) -> object:
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge as exc:
        raise errors.body_too_large(MAX_BODY_BYTES) from exc
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError) as exc:
        raise errors.invalid_body() from exc


async def compute(state: EmulatorState, call: OcrCall, request_id: str) -> Computed:
    images = await load_images(state.images, call)
    # Now, not the request's arrival: the images took a while to load (see admit).
    reservation = state.limits.reserve_tokens(
        call.model.name, time.monotonic(), input_tokens(call, images)
    )
    if reservation is None:
        raise errors.token_rate_exceeded()
    try:
        lines = await read_text(state.recognizer, call, images)
        completion = complete(
            call, images, lines, request_id=request_id, completion_id=state.ids.completion_id()
        )
    except BaseException:
        state.limits.release_tokens(call.model.name, reservation)
        raise
    return Computed(completion, reservation, [image.stats_key for image in images])


def injected_error(plan: Plan) -> ApiError:
    return errors.internal_error() if plan.error_status == 500 else errors.service_unavailable()


def abort(request: web.Request, state: EmulatorState) -> None:
    """Close the connection abruptly, whatever was (or was not) sent on it."""
    state.stats.drop()
    if request.transport is not None:
        request.transport.abort()


def drop(request: web.Request, state: EmulatorState) -> web.Response:
    """A dropped request: the client gets no response at all."""
    abort(request, state)
    return web.Response(status=200)  # never sent: the transport is gone


def record_success(state: EmulatorState, admitted: Admitted, computed: Computed) -> None:
    usage = computed.completion.usage
    state.limits.settle_tokens(computed.reservation, usage.output_tokens)
    state.stats.success(
        admitted_at=admitted.admitted_at,
        image_keys=computed.image_keys,
        input_tokens=usage.input_tokens,
        output_tokens=usage.output_tokens,
        image_tokens=usage.image_tokens,
    )


async def stream(
    request: web.Request,
    state: EmulatorState,
    adapter: ApiAdapter,
    admitted: Admitted,
    computed: Computed,
    request_id: str,
) -> web.StreamResponse:
    events = adapter.stream_events(
        computed.completion, admitted.call, state.config.stream_chunk_tokens
    )
    fault = admitted.plan.fault
    # Faults strike halfway, after at least one event: the client has started reading.
    stop_at = max(1, len(events) // 2) if fault != "none" else len(events)
    response = web.StreamResponse(
        headers={
            "Content-Type": adapter.stream_content_type,
            "Cache-Control": "no-cache",
            "X-Request-Id": request_id,
        }
    )
    if fault == "trickle":
        return await trickled(
            request, state, admitted, computed, response, events[:1], keep_alive=True
        )
    try:
        await response.prepare(request)
        for event in events[:stop_at]:
            await response.write(event)
        if fault == "drop":
            state.limits.release_tokens(admitted.call.model.name, computed.reservation)
            abort(request, state)
            return response
        if fault in ("error", "long_fields"):
            error, error_id = (
                (injected_error(admitted.plan), request_id)
                if fault == "error"
                else hostile.over_long_error(request_id)
            )
            await response.write(adapter.stream_error(error, error_id, stop_at + 1))
            await response.write_eof()
            state.limits.release_tokens(admitted.call.model.name, computed.reservation)
            state.stats.error(error.status, adapter.error_code(error))
            return response
        await response.write_eof()
    except ConnectionError:
        state.limits.release_tokens(admitted.call.model.name, computed.reservation)
        state.stats.error(*CLIENT_CLOSED)
        return response
    record_success(state, admitted, computed)
    return response


async def trickled(
    request: web.Request,
    state: EmulatorState,
    admitted: Admitted,
    computed: Computed,
    response: web.StreamResponse,
    pieces: list[bytes],
    *,
    keep_alive: bool = False,
) -> web.StreamResponse:
    """A 200 whose ``pieces`` come one per trickle interval (then keep-alives, a stream)."""
    try:
        done = await hostile.trickle(request, state, response, pieces, then_keep_alive=keep_alive)
        if done:
            await response.write_eof()
    except ConnectionError:
        done = False
    if not done:
        state.limits.release_tokens(admitted.call.model.name, computed.reservation)
        state.stats.error(*CLIENT_CLOSED)
        return response
    record_success(state, admitted, computed)
    return response


def _dumps(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
