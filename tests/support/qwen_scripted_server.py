"""A tiny scripted HTTP server for the Qwen-OCR client tests (aiohttp, 127.0.0.1, port 0).

Each incoming request is recorded raw (method, path, headers, body, client port) and answered
with the next scripted :class:`Reply`: a whole body, a stream written chunk by chunk (with
pauses), or a stream whose connection is cut after some chunks. It runs its own event loop
in a thread, so sync and async clients can both talk to it over a real socket.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web


@dataclass
class Reply:
    """One scripted answer."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    chunks: list[bytes] | None = None  # a stream, written in these pieces
    delay_before: float = 0.0  # seconds before the status line
    delay_between: float = 0.0  # seconds between stream chunks
    drop_after: int | None = None  # cut the connection after this many chunks

    @classmethod
    def json(cls, data: Any, status: int = 200, headers: dict[str, str] | None = None) -> Reply:
        return cls(
            status=status,
            headers={"Content-Type": "application/json", **(headers or {})},
            body=json.dumps(data, ensure_ascii=False).encode(),
        )

    @classmethod
    def sse(cls, body: bytes, piece: int = 37, **kwargs: Any) -> Reply:
        """A stream of ``body`` split every ``piece`` bytes (mid-line, mid-character)."""
        chunks = [body[i : i + piece] for i in range(0, len(body), piece)]
        return cls(headers={"Content-Type": "text/event-stream"}, chunks=chunks, **kwargs)


@dataclass(frozen=True)
class Recorded:
    """One request as the server received it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    client_port: int

    def json(self) -> Any:
        return json.loads(self.body)


class ScriptedServer:
    """Start with ``with ScriptedServer() as server:``; ``server.base_url`` is the root URL."""

    def __init__(self) -> None:
        self.replies: deque[Reply] = deque()
        self.requests: list[Recorded] = []
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self.base_url = ""

    def script(self, *replies: Reply) -> None:
        self.replies.extend(replies)

    def __enter__(self) -> ScriptedServer:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._start(), self._loop).result(timeout=10)
        return self

    def __exit__(self, *exc: object) -> None:
        if self._runner is not None:
            asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    async def _start(self) -> None:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=0.5)
        await self._runner.setup()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.bind(("127.0.0.1", 0))
        site = web.SockSite(self._runner, sock)
        await site.start()
        self.base_url = f"http://127.0.0.1:{sock.getsockname()[1]}"

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        peer = request.transport.get_extra_info("peername") if request.transport else None
        self.requests.append(
            Recorded(
                method=request.method,
                path=request.path,
                headers=dict(request.headers),
                body=await request.read(),
                client_port=peer[1] if peer else 0,
            )
        )
        reply = self.replies.popleft() if self.replies else Reply(status=599, body=b"unscripted")
        await asyncio.sleep(reply.delay_before)
        if reply.chunks is None:
            return web.Response(status=reply.status, headers=reply.headers, body=reply.body)
        response = web.StreamResponse(status=reply.status, headers=reply.headers)
        await response.prepare(request)
        for index, chunk in enumerate(reply.chunks):
            if reply.drop_after is not None and index == reply.drop_after:
                assert request.transport is not None
                request.transport.close()  # mid-body: the chunked encoding never terminates
                return response
            await response.write(chunk)
            await asyncio.sleep(reply.delay_between)
        await response.write_eof()
        return response
