"""The aiohttp application: both APIs under one root, plus the emulator's ``/_`` endpoints."""

from __future__ import annotations

from aiohttp import web

from qocr.emulator import admin, handler_batch, handler_compatible, handler_native
from qocr.emulator.config import EmulatorConfig
from qocr.emulator.serving import MAX_BODY_BYTES
from qocr.emulator.state import STATE, EmulatorState


def build_app(config: EmulatorConfig) -> web.Application:
    """An application serving ``config``; start it with an :class:`aiohttp.web.AppRunner`."""
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    app[STATE] = EmulatorState.create(config)
    app.router.add_post(handler_compatible.PATH, handler_compatible.chat_completions)
    app.router.add_post(handler_native.PATH, handler_native.generation)
    app.router.add_get("/_stats", admin.get_stats)
    app.router.add_post("/_stats/reset", admin.reset_stats)
    app.router.add_get("/_health", admin.health)
    app.router.add_get("/_faults", admin.get_faults)
    app.router.add_post("/_faults", admin.set_faults)
    app.router.add_get("/_limits", admin.get_limits)
    app.router.add_post("/_limits", admin.set_limits)
    app[handler_batch.BATCHES] = handler_batch.make_service(app[STATE])
    handler_batch.add_routes(app)
    app.on_startup.append(_start)
    app.on_shutdown.append(_release_held)
    app.on_cleanup.append(_stop)
    return app


async def _start(app: web.Application) -> None:
    await app[STATE].start()


async def _release_held(app: web.Application) -> None:
    app[STATE].release_held()


async def _stop(app: web.Application) -> None:
    await app[handler_batch.BATCHES].stop()
    await app[STATE].stop()
