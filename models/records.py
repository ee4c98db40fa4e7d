"""The typed records that cross into and out of the store.

What a new batch asks for (:class:`BatchSpec`, :class:`SourceRow`), what a worker holds
(:class:`ClaimedItem`), and what one call ended in (:class:`AttemptRecord`) and produced
(:class:`ResultRecord`). Strings in them come as received: the store caps their length.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from qocr.models.states import AttemptOutcome


@dataclass(frozen=True)
class BatchSpec:
    """What a new batch asks of the model, and where it came from."""

    name: str
    api: str
    model: str
    options: dict[str, Any]
    task: str | None = None
    prompt: str | None = None
    result_schema: dict[str, Any] | None = None
    source_options: dict[str, Any] = field(default_factory=dict)
    schedule_name: str | None = None
    scheduled_for: datetime | None = None
    notify_url: str | None = None
    idempotency_key: str | None = None
    request_sha256: str | None = None
    mode: str = "realtime"  # or "batch": the provider's Batch API (models/shards.py)
    # A run of an ``only_new`` schedule: its sources are recorded (models/schedule_sources.py).
    only_new: bool = False


@dataclass(frozen=True)
class SourceRow:
    """One image to read: its URI and, when known without reading it, a content fingerprint."""

    source: str
    fingerprint: str | None = None


@dataclass(frozen=True)
class ClaimedItem:
    """An item a worker holds under a lease, with what it needs to build the request."""

    item_id: int
    batch_id: int
    source: str
    fingerprint: str | None
    attempts: int
    lease_token: str


@dataclass(frozen=True)
class AttemptRecord:
    """One try of an item, as it ended: a call to the provider, or a try that failed before.

    ``number``: the attempt's row when the call was counted before it left
    (:meth:`ItemTransitions.begin_call`); the store then fills that row in. None: the try
    is counted and recorded when it is written.
    """

    started_at: datetime
    ended_at: datetime
    outcome: AttemptOutcome
    http_status: int | None = None
    error_code: str | None = None
    error_message: str | None = None
    request_id: str | None = None
    retry_after: float | None = None
    worker: str | None = None
    number: int | None = None
    called: bool = True  # False: the try ended before a request left (nothing to pay)

    def discarded(self) -> AttemptRecord:
        """This call, kept on the record after its lease passed to another worker."""
        return AttemptRecord(
            started_at=self.started_at,
            ended_at=self.ended_at,
            outcome=AttemptOutcome.DISCARDED,
            http_status=self.http_status,
            request_id=self.request_id,
            worker=self.worker,
            error_code="lease_lost",
            error_message="the item's lease had passed to another worker; result not kept",
            number=self.number,
            called=self.called,
        )


@dataclass(frozen=True)
class ResultRecord:
    """What a successful call produced: the columns of the item's one result row."""

    text: str
    kv_result: Any = None
    words_info: list[Any] | None = None
    # Decoded JSON only (fenced HTML/LaTeX bodies are in the text already).
    parsed: Any = None
    finish_reason: str | None = None
    request_id: str | None = None
    model: str | None = None
    input_tokens: int = 0
    output_tokens: int = 0
    image_tokens: int = 0
    total_tokens: int = 0
    latency_ms: float | None = None
    # What a result cache keys on: the image's sha256 and the request options' fingerprint.
    image_sha256: str | None = None
    options_fingerprint: str | None = None
    # A result reused from the cache (worker/cache.py): the item it copies, and the token
    # counts that item paid (this one's are 0).
    cached_from: int | None = None
    original_input_tokens: int | None = None
    original_output_tokens: int | None = None
    original_image_tokens: int | None = None
    original_total_tokens: int | None = None


@dataclass(frozen=True)
class ReapReport:
    """What one pass of the reaper gave back to the dispatcher."""

    expired_leases: int
    lost_messages: int
    stranded_messages: int = 0  # received by a worker that died before starting them
