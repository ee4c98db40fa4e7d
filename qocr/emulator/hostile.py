"""A hostile provider's answers, for the faults a client must survive without stalling or
storing junk: a request that is never answered (``hang``), a 200 that trickles (``trickle``),
and an error whose fields are far too long (``long_fields``).

Held requests end when the client goes away or the emulator stops (never by themselves):
a client without a total deadline waits forever, as it would on the real network.
"""

from __future__ import annotations

import asyncio
import contextlib

from aiohttp import web

from qocr.emulator import errors
from qocr.emulator.state import EmulatorState

# How often a held request looks whether its client has gone.
_POLL_S = 0.1
LONG_FIELD_CHARS = 300
LONG_MESSAGE_CHARS = 5 * 1024 * 1024
KEEP_ALIVE = b": keep-alive\n\n"


def client_gone(request: web.Request) -> bool:
    transport = request.transport
    return transport is None or transport.is_closing()


async def wait(request: web.Request, state: EmulatorState, seconds: float) -> bool:
    """Sleep ``seconds``; False as soon as the client has gone or the emulator stops."""
    loop = asyncio.get_running_loop()
    until = loop.time() + seconds
    while not state.stopping.is_set() and not client_gone(request):
        left = until - loop.time()
        if left <= 0:
            return True
        with contextlib.suppress(TimeoutError):  # the poll interval passed: look again
            await asyncio.wait_for(state.stopping.wait(), min(left, _POLL_S))
    return False


def cut(request: web.Request) -> None:
    """Close the connection (the emulator is stopping, or the client left)."""
    if request.transport is not None:
        request.transport.abort()


async def hang(request: web.Request, state: EmulatorState) -> web.Response:
    """Read the request, answer nothing, until the client gives up."""
    state.stats.hang()
    while await wait(request, state, 3600.0):
        pass
    cut(request)
    return web.Response(status=200)  # never sent: the connection is gone


async def trickle(
    request: web.Request,
    state: EmulatorState,
    response: web.StreamResponse,
    pieces: list[bytes],
    *,
    then_keep_alive: bool,
) -> bool:
    """Write ``pieces`` one per trickle interval, then (a stream) keep-alive comments forever.

    True when every piece was written and the answer may end; False when the client left or
    the emulator stopped first. ``ConnectionError`` when a write finds the client gone.
    """
    state.stats.trickle()
    await response.prepare(request)
    for index, piece in enumerate(pieces):
        if index and not await wait(request, state, state.faults.trickle_interval_s):
            cut(request)
            return False
        await response.write(piece)
    while then_keep_alive:
        if not await wait(request, state, state.faults.trickle_interval_s):
            cut(request)
            return False
        await response.write(KEEP_ALIVE)
    return True


def over_long_error(request_id: str) -> tuple[errors.ApiError, str]:
    """A 500 with a 300-character code and request id and a 5 MB message."""
    code = ("InternalError." + "Overlong" * LONG_FIELD_CHARS)[:LONG_FIELD_CHARS]
    sentence = "The provider says far too much about what went wrong. "
    message = (sentence * (LONG_MESSAGE_CHARS // len(sentence) + 1))[:LONG_MESSAGE_CHARS]
    long_id = (request_id + "-" + "0" * LONG_FIELD_CHARS)[:LONG_FIELD_CHARS]
    spec = errors.ErrorSpec(
        status=500,
        code=code,
        message=message,
        compatible_code=code.replace(".", "_").lower(),
        compatible_type="internal_error",
        compatible_message=message,
    )
    return errors.ApiError(spec), long_id
