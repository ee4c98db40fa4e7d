"""The emulator's own endpoints (not Alibaba's): ``GET /_stats``, ``POST /_stats/reset``,
``GET /_health``, ``GET`` / ``POST /_faults`` (the fault rates, changed while it runs) and
``GET`` / ``POST /_limits`` (the rate limits, changed while it runs). See the README for the
fields of ``/_stats``, ``/_faults`` and ``/_limits``.
"""

from __future__ import annotations

import json

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


async def get_faults(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].faults.settings())


async def set_faults(request: web.Request) -> web.Response:
    """Change some fault settings: ``{"hang_rate": 1.0}``; the others keep their values."""
    try:
        changes = json.loads(await request.read())
        if not isinstance(changes, dict):
            raise ValueError("the body must be a JSON object of fault settings")
        settings = request.app[STATE].faults.update(changes)
    except ValueError as exc:  # json.JSONDecodeError is one
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response(settings)


async def get_limits(request: web.Request) -> web.Response:
    return web.json_response(request.app[STATE].limits.settings())


async def set_limits(request: web.Request) -> web.Response:
    """Change the rate limits: ``{"rpm": 1200}``, ``{"tpm": null}`` (unlimited); the other
    keeps its value, and what was admitted stays counted."""
    try:
        changes = json.loads(await request.read())
        if not isinstance(changes, dict):
            raise ValueError('the body must be a JSON object with "rpm" and/or "tpm"')
        settings = request.app[STATE].limits.update(changes)
    except ValueError as exc:  # json.JSONDecodeError is one
        return web.json_response({"error": str(exc)}, status=400)
    return web.json_response(settings)
