"""The emulator's own endpoints (not Alibaba's): ``GET /_stats``, ``POST /_stats/reset``,
``GET /_health``. See the README for the fields of ``/_stats``.
"""

from __future__ import annotations

from aiohttp import web

from qocr.emulator.state import STATE


async def get_stats(request: web.Request) -> web.Response:
    state = request.app[STATE]
    snapshot = state.stats.snapshot()
    snapshot["recognizer"] = state.recognizer.name
    return web.json_response(snapshot)


async def reset_stats(request: web.Request) -> web.Response:
    request.app[STATE].reset()
    return web.json_response({"reset": True})


async def health(request: web.Request) -> web.Response:
    return web.json_response({"status": "ok", "recognizer": request.app[STATE].recognizer.name})
