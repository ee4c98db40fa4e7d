"""Batch mode's share of the dispatcher's tick: plan shards, hand them out, poll, cancel.

A batch-mode batch's items never go to the realtime queue (the dispatcher's pick leaves
them out); here they are grouped into shards (:mod:`models.shards`) of at most
``max_lines`` items, and each shard that needs work (new, or ended at the provider, or
left by a dead worker) is sent to a worker through the ``publish`` callable given in. The
provider is polled from here, each submitted shard once per ``poll_interval``; a shard of a
batch that was cancelled or stopped is cancelled at the provider too. Everything lives in
SQL, so a restart of any process loses nothing: the next tick picks up where it stood.

The step runs at most once per ``step_seconds`` (a gentle pace: one GET per open shard per
poll interval), and never raises: the realtime dispatch of the same tick goes on.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

from qocr.models.base import utcnow
from qocr.models.shard_store import ProviderState, ShardStore
from qocr.qwen.batch_api import TERMINAL_STATUSES, ProviderBatch
from qocr.qwen.batch_client import BatchClient
from qocr.qwen.errors import QwenError
from qocr.settings import Settings

log = logging.getLogger(__name__)

# 100 shards of 50,000 lines: five million items planned per step at most.
MAX_SHARDS_PER_STEP = 100

# publish(shard_id): send the shard to a worker (its task on the control queue).
PublishShard = Callable[[int], None]


class ProviderBatches(Protocol):
    """The provider calls the tick makes (:class:`qocr.qwen.batch_client.BatchClient`)."""

    def retrieve(self, batch_id: str) -> ProviderBatch: ...

    def cancel(self, batch_id: str) -> ProviderBatch: ...


ProviderFactory = Callable[[], AbstractContextManager[ProviderBatches]]


@dataclass(frozen=True)
class BatchModeReport:
    shards_opened: int = 0
    shards_published: int = 0
    polled: int = 0
    cancelled: int = 0


def batch_client(settings: Settings) -> BatchClient:
    """The Batch API client of these settings (the region's host, or QOCR_BASE_URL)."""
    return BatchClient(
        settings.require_api_key(), region=settings.region, base_url=settings.base_url
    )


def provider_state(batch: ProviderBatch) -> ProviderState:
    return ProviderState(
        status=batch.status.value,
        terminal=batch.status in TERMINAL_STATUSES,
        total=batch.counts.total,
        completed=batch.counts.completed,
        failed=batch.counts.failed,
        output_file_id=batch.output_file_id,
        error_file_id=batch.error_file_id,
        error_message=batch.error,
    )


class BatchModeTick:
    """Called by :meth:`scheduler.dispatch.Dispatcher.tick`; see the module docstring."""

    @classmethod
    def from_settings(
        cls, settings: Settings, shards: ShardStore, publish: PublishShard
    ) -> BatchModeTick:
        poll = timedelta(seconds=settings.batch_poll_seconds)
        return cls(
            shards,
            publish,
            lambda: batch_client(settings),
            max_lines=settings.batch_max_lines,
            poll_interval=poll,
            # A task not taken up within this was lost (or its worker died before leasing).
            republish_after=max(poll, timedelta(seconds=2 * settings.lease_seconds)),
            step_seconds=min(5.0, settings.batch_poll_seconds),
        )

    def __init__(
        self,
        shards: ShardStore,
        publish: PublishShard,
        provider: ProviderFactory,
        *,
        max_lines: int,
        poll_interval: timedelta,
        republish_after: timedelta,
        step_seconds: float = 5.0,
    ) -> None:
        self.shards = shards
        self.publish = publish
        self.provider = provider
        self.max_lines = max_lines
        self.poll_interval = poll_interval
        self.republish_after = republish_after
        self.step_seconds = step_seconds
        self._next_step = 0.0

    def __call__(self) -> BatchModeReport | None:
        """One step if one is due; None when it is not (or it failed: logged)."""
        if time.monotonic() < self._next_step:
            return None
        self._next_step = time.monotonic() + self.step_seconds
        try:
            return self.step()
        except Exception:
            log.warning("batch mode step failed; the next one tries again", exc_info=True)
            return None

    def step(self) -> BatchModeReport:
        opened = self.plan()
        published = self.hand_out()
        polled, cancelled = self.poll()
        # A shard that just ended goes to a worker now, not a step later.
        if polled:
            published += self.hand_out()
        return BatchModeReport(opened, published, polled, cancelled)

    def plan(self) -> int:
        """Open shards for every batch-mode batch's free items."""
        opened = 0
        for batch_id in self.shards.batches_with_free_items():
            # Bounded: a step stays short whatever the batch; the next step opens more.
            for _ in range(MAX_SHARDS_PER_STEP):
                if self.shards.open_shard(batch_id, self.max_lines) is None:
                    break
                opened += 1
        return opened

    def hand_out(self) -> int:
        due = self.shards.due_for_worker(utcnow(), self.republish_after)
        for position, shard_id in enumerate(due):
            try:
                self.publish(shard_id)
            except Exception:
                # Not sent means not sent: the next step sends them.
                self.shards.unmark_published(due[position:])
                raise
        return len(due)

    def poll(self) -> tuple[int, int]:
        """Ask the provider about submitted shards; cancel those of batches that ended."""
        to_cancel = self.shards.due_for_cancel()
        to_poll = self.shards.due_for_poll(utcnow(), self.poll_interval)
        if not to_cancel and not to_poll:
            return 0, 0
        cancelled = polled = 0
        with self.provider() as provider:
            for shard_id, provider_batch_id in to_cancel:
                try:
                    provider.cancel(provider_batch_id)
                except QwenError as exc:
                    log.warning(
                        "shard %s: cancel of %s failed: %s", shard_id, provider_batch_id, exc
                    )
                    continue
                self.shards.mark_cancel_requested(shard_id)
                cancelled += 1
            for shard_id, provider_batch_id in to_poll:
                try:
                    batch = provider.retrieve(provider_batch_id)
                except QwenError as exc:
                    log.warning("shard %s: poll of %s failed: %s", shard_id, provider_batch_id, exc)
                    continue
                if self.shards.record_poll(shard_id, provider_state(batch)):
                    log.info("shard %s: provider batch %s", shard_id, batch.status.value)
                polled += 1
        return polled, cancelled
