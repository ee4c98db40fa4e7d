"""Run the emulator inside a test or a benchmark: a background thread with its own loop.

    with running_emulator(rpm=600, seed=1) as emulator:
        client = OpenAI(base_url=emulator.compatible_base_url, api_key="sk-test")
        ...
        assert emulator.stats()["successes"] == 3

The server listens on 127.0.0.1 and a free port (``port=0``) unless the overrides say
otherwise, and is stopped when the ``with`` block ends.
"""

from __future__ import annotations

import asyncio
import io
import threading
from collections.abc import Coroutine, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Any, TypeVar

from qocr.emulator.config import EmulatorConfig
from qocr.emulator.handler_batch import BATCHES
from qocr.emulator.server import RunningServer, start_server

_T = TypeVar("_T")
_CALL_TIMEOUT_S = 30.0


@dataclass
class EmulatorHandle:
    """A running emulator: its URLs, its config, and its counters."""

    config: EmulatorConfig
    base_url: str  # the root: both APIs live under it (set QOCR_BASE_URL to this)
    _server: RunningServer
    _loop: asyncio.AbstractEventLoop

    @property
    def compatible_base_url(self) -> str:
        """The OpenAI SDK's ``base_url``."""
        return f"{self.base_url}/compatible-mode/v1"

    @property
    def native_base_url(self) -> str:
        """The DashScope SDK's ``base_http_api_url``."""
        return f"{self.base_url}/api/v1"

    @property
    def port(self) -> int:
        return self._server.port

    def stats(self) -> dict[str, Any]:
        """The ``/_stats`` document, read on the server's loop."""
        return self._call(self._snapshot())

    def reset(self) -> None:
        """Clear the counters and the rate windows (``POST /_stats/reset``)."""
        self._call(self._reset())

    def set_faults(self, **changes: Any) -> dict[str, Any]:
        """Change fault settings while it runs (``POST /_faults``): ``set_faults(hang_rate=1)``.

        A bad value raises ValueError and changes nothing; returns the settings now in force.
        """
        return self._call(self._update_faults(changes))

    def faults(self) -> dict[str, Any]:
        """The fault settings in force (``GET /_faults``)."""
        return self._call(self._update_faults({}))

    def set_batch_faults(self, **changes: Any) -> dict[str, Any]:
        """Batch API faults (``POST /_batch_faults``): ``plans=[{"error_lines": 2}]``,
        ``upload_delays=[5.0]`` (see :mod:`qocr.emulator.batch_jobs`)."""
        return self._call(self._batch_faults(changes))

    def batch_stats(self) -> dict[str, Any]:
        """Uploads by file name, provider batches by input file, and lines run."""
        return self._call(self._batch_stats())

    async def _batch_faults(self, changes: dict[str, Any]) -> dict[str, Any]:
        return self._server.runner.app[BATCHES].faults.update(changes)

    async def _batch_stats(self) -> dict[str, Any]:
        service = self._server.runner.app[BATCHES]
        return {
            **service.counters,
            "uploads_by_name": dict(service.uploads_by_name),
            "batches_by_file": dict(service.batches_by_file),
        }

    def set_limits(self, **changes: object) -> dict[str, int | None]:
        """Change the rate limits while it runs (``POST /_limits``): ``set_limits(rpm=1200)``;
        None is unlimited. A bad value raises ValueError and changes nothing."""
        return self._call(self._update_limits(changes))

    async def _update_limits(self, changes: dict[str, object]) -> dict[str, int | None]:
        return self._server.state.limits.update(changes)

    async def _update_faults(self, changes: dict[str, Any]) -> dict[str, Any]:
        return self._server.state.faults.update(changes)

    async def _snapshot(self) -> dict[str, Any]:
        snapshot = self._server.state.stats.snapshot()
        snapshot["recognizer"] = self._server.state.recognizer.name
        return snapshot

    async def _reset(self) -> None:
        self._server.state.reset()

    def _call(self, coroutine: Coroutine[Any, Any, _T]) -> _T:
        future: Future[_T] = asyncio.run_coroutine_threadsafe(coroutine, self._loop)
        return future.result(_CALL_TIMEOUT_S)


def text_png(lines: list[str], *, font_size: int = 48, width: int | None = None) -> bytes:
    """A white PNG with ``lines`` in large black type, one per row: easy for OCR to read back."""
    from PIL import Image, ImageDraw, ImageFont

    font = ImageFont.load_default(size=font_size)
    longest = max((font.getlength(line) for line in lines), default=0.0)
    size = (width or int(longest) + 2 * font_size, (2 * len(lines) + 1) * font_size)
    image = Image.new("RGB", size, "white")
    draw = ImageDraw.Draw(image)
    for row, line in enumerate(lines):
        draw.text((font_size, (2 * row + 1) * font_size), line, fill="black", font=font)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@contextmanager
def running_emulator(
    config: EmulatorConfig | None = None, **overrides: Any
) -> Iterator[EmulatorHandle]:
    """Start an emulator in a background thread for the duration of the ``with`` block.

    ``config`` defaults to :class:`EmulatorConfig`'s defaults; ``overrides`` replace its
    fields (``rpm=600``, ``api_key="sk-test"``...). Host and port default to 127.0.0.1:0.
    """
    settings = replace(config or EmulatorConfig(), **{"host": "127.0.0.1", "port": 0, **overrides})
    loop = asyncio.new_event_loop()
    started: Future[RunningServer] = Future()
    thread = threading.Thread(
        target=_run_loop, args=(loop, settings, started), name="qocr-emulator", daemon=True
    )
    thread.start()
    server = started.result(_CALL_TIMEOUT_S)
    handle = EmulatorHandle(config=settings, base_url=server.base_url, _server=server, _loop=loop)
    try:
        yield handle
    finally:
        asyncio.run_coroutine_threadsafe(server.stop(), loop).result(_CALL_TIMEOUT_S)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(_CALL_TIMEOUT_S)


def _run_loop(
    loop: asyncio.AbstractEventLoop, config: EmulatorConfig, started: Future[RunningServer]
) -> None:
    asyncio.set_event_loop(loop)
    try:
        server = loop.run_until_complete(start_server(config))
    except BaseException as exc:  # report the failure to the waiting test, then end
        started.set_exception(exc)
        loop.close()
        return
    started.set_result(server)
    try:
        loop.run_forever()
    finally:
        loop.run_until_complete(loop.shutdown_asyncgens())
        loop.close()
