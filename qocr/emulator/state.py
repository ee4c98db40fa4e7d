"""Everything one running emulator shares between requests, kept on the aiohttp app."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import aiohttp
from aiohttp import web

from qocr.emulator.config import EmulatorConfig
from qocr.emulator.faults import FaultInjector, IdFactory
from qocr.emulator.images import ImageLoader
from qocr.emulator.limits import RateLimits
from qocr.emulator.recognition import Recognizer, make_recognizer
from qocr.emulator.stats import Stats


@dataclass
class EmulatorState:
    """Limits, faults, counters and engines of one emulator (used on its event loop only)."""

    config: EmulatorConfig
    limits: RateLimits
    faults: FaultInjector
    ids: IdFactory
    recognizer: Recognizer
    stats: Stats = field(default_factory=Stats)
    # Set when the emulator stops: requests held by a hang or a trickle end at once.
    stopping: asyncio.Event = field(default_factory=asyncio.Event)
    _loader: ImageLoader | None = None
    _session: aiohttp.ClientSession | None = None

    @classmethod
    def create(cls, config: EmulatorConfig) -> EmulatorState:
        return cls(
            config=config,
            limits=RateLimits(config.rpm, config.tpm),
            faults=FaultInjector(
                error_rate=config.error_rate,
                drop_rate=config.drop_rate,
                latency_ms=config.latency_ms,
                seed=config.seed,
                hang_rate=config.hang_rate,
                trickle_rate=config.trickle_rate,
                long_fields_rate=config.long_fields_rate,
                trickle_interval_s=config.trickle_interval_s,
            ),
            ids=IdFactory(config.seed),
            recognizer=make_recognizer(config.recognizer),
        )

    @property
    def images(self) -> ImageLoader:
        if self._loader is None:
            raise RuntimeError("the emulator has not started (no image loader yet)")
        return self._loader

    async def start(self) -> None:
        # The fetch session needs the running loop, so it is made at startup.
        self._session = aiohttp.ClientSession()
        self._loader = ImageLoader(self._session, self.config.fetch_timeout_s)

    def release_held(self) -> None:
        """Let requests held by a hang or a trickle go (the server is shutting down)."""
        self.stopping.set()

    async def stop(self) -> None:
        if self._session is not None:
            await self._session.close()
        await self.recognizer.close()

    def reset(self) -> None:
        """Forget the counters and the rate windows (``POST /_stats/reset``)."""
        self.stats.reset()
        self.limits.clear()


STATE = web.AppKey("qocr_emulator_state", EmulatorState)
