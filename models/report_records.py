"""The records the reporting commands read: a batch, its summary, an item, its attempts.

Filled by :class:`models.reports.Reports`; ``qocr status``, ``results`` and ``show`` render
them. Plain frozen values: no session or lazy load stands behind them.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from qocr.models.states import AttemptOutcome, BatchState, ItemState

FINISHED_STATES = (
    ItemState.SUCCEEDED,
    ItemState.FAILED,
    ItemState.CANCELLED,
    ItemState.EXPANDED,
)


@dataclass(frozen=True)
class Usage:
    """Tokens summed over results; image tokens are part of the input tokens."""

    input_tokens: int = 0
    output_tokens: int = 0
    image_tokens: int = 0
    total_tokens: int = 0

    def __add__(self, other: Usage) -> Usage:
        return Usage(
            self.input_tokens + other.input_tokens,
            self.output_tokens + other.output_tokens,
            self.image_tokens + other.image_tokens,
            self.total_tokens + other.total_tokens,
        )


@dataclass(frozen=True)
class BatchInfo:
    """The batch row, without its JSON options."""

    id: int
    name: str
    state: BatchState
    stop_reason: str | None
    api: str
    model: str
    task: str | None
    result_schema: dict[str, Any] | None
    total: int
    created_at: datetime
    updated_at: datetime
    finished_at: datetime | None
    idempotency_key: str | None = None
    notify_url: str | None = None
    mode: str = "realtime"  # or "batch": priced at the Batch API's rate


@dataclass(frozen=True)
class BatchLine:
    """One batch in the list of recent batches."""

    batch: BatchInfo
    counts: dict[ItemState, int]

    @property
    def done(self) -> int:
        return sum(self.counts[state] for state in FINISHED_STATES)


@dataclass(frozen=True)
class Recent:
    """Items that finished since ``since``: the base of throughput and ETA."""

    since: datetime
    finished: int


@dataclass(frozen=True)
class BatchSummary:
    """Everything ``qocr status BATCH`` prints, from five aggregate queries."""

    batch: BatchInfo
    counts: dict[ItemState, int]
    usage: Usage
    # Keyed by the model a result names (the batch's model when it names none).
    usage_by_model: dict[str, Usage]
    finish_reasons: dict[str | None, int]
    errors: dict[str | None, int]
    # Results reused from the cache, and per model the tokens their originals were billed
    # (input and output only), which this batch did not pay.
    cached: int = 0
    saved_by_model: dict[str, Usage] = field(default_factory=dict)
    # Items added as the pages of documents (PDF, TIFF) when they were expanded.
    page_items: int = 0


@dataclass(frozen=True)
class AttemptInfo:
    number: int
    outcome: AttemptOutcome
    started_at: datetime
    ended_at: datetime | None  # None while the call is in flight
    http_status: int | None
    error_code: str | None
    error_message: str | None
    request_id: str | None
    retry_after: float | None
    worker: str | None


@dataclass(frozen=True)
class ResultInfo:
    text: str
    kv_result: Any
    words_info: list[Any] | None
    parsed: Any
    finish_reason: str | None
    request_id: str | None
    model: str | None
    usage: Usage
    latency_ms: float | None
    created_at: datetime | None
    cached_from: int | None = None  # reused from the cache: the item whose result it copies


@dataclass(frozen=True)
class ItemRow:
    """One item as exported: the item's columns and its result, if it has one."""

    id: int
    batch_id: int
    source: str
    state: ItemState
    attempts: int
    error_code: str | None
    error_message: str | None
    created_at: datetime
    finished_at: datetime | None
    result: ResultInfo | None
    # A page of a document: the document's item and the page number (from 1).
    document_id: int | None = None
    page: int | None = None


@dataclass(frozen=True)
class ItemDetail:
    """One item for ``qocr show``: its row, its result and every attempt."""

    item: ItemRow
    not_before: datetime | None
    batch_name: str
    history: list[AttemptInfo] = field(default_factory=list)
