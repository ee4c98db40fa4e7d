"""Starting and stopping the emulator on an event loop (the CLI's and the tests' common part)."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Callable
from dataclasses import dataclass

from aiohttp import web

from qocr.emulator.app import build_app
from qocr.emulator.config import EmulatorConfig
from qocr.emulator.state import STATE, EmulatorState

# In-flight requests get this long to finish when the emulator stops.
SHUTDOWN_TIMEOUT_S = 3.0


@dataclass
class RunningServer:
    """A started emulator; ``port`` is the real one (``port=0`` picks a free port)."""

    runner: web.AppRunner
    host: str
    port: int

    @property
    def base_url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def state(self) -> EmulatorState:
        return self.runner.app[STATE]

    async def stop(self) -> None:
        await self.runner.cleanup()


async def start_server(config: EmulatorConfig) -> RunningServer:
    """Listen on ``config.host:config.port`` and return once connections are accepted."""
    runner = web.AppRunner(build_app(config), access_log=None, shutdown_timeout=SHUTDOWN_TIMEOUT_S)
    await runner.setup()
    site = web.TCPSite(runner, config.host, config.port)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    address = runner.addresses[0]
    return RunningServer(runner=runner, host=config.host, port=int(address[1]))


async def serve_until_signalled(
    config: EmulatorConfig, on_ready: Callable[[RunningServer], None]
) -> None:
    """Run until SIGTERM or SIGINT, then stop cleanly (the ``qocr emulator`` command)."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    server = await start_server(config)
    try:
        on_ready(server)
        await stop.wait()
    finally:
        await server.stop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signum)
