"""The typed records the Python API returns: the documents of docs/cli-json.md, as values.

Every record is read from the very document ``qocr status`` / ``results`` / ``retry`` /
``cancel`` print with ``--json`` (built once, in :mod:`models.batch_documents` and
:mod:`models.documents`), and ``to_dict()`` gives that document back, key for key, so the
library and the command line never drift. Times are timezone-aware ``datetime`` values
here and ISO 8601 strings in the documents.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from enum import Enum
from typing import Any, get_type_hints

from qocr.models.report_records import ItemRow
from qocr.models.states import BatchState, ItemState
from qocr.redact import redact_text

_NOT_IN_JSON = {"json": False}


class Record:
    """``to_dict()``: the record as its JSON document (fields in order, times as ISO 8601)."""

    def to_dict(self) -> dict[str, Any]:
        return {
            f.name: _plain(getattr(self, f.name))
            for f in fields(self)  # type: ignore[arg-type]
            if f.metadata.get("json", True)
            and not (f.metadata.get("absent_when_none") and getattr(self, f.name) is None)
        }


def _plain(value: Any) -> Any:
    if isinstance(value, Record):
        return value.to_dict()
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    return value


def _read(cls: type[Record], doc: Mapping[str, Any], **given: Any) -> dict[str, Any]:
    """The arguments of record ``cls`` from its document: each field as the document has it,
    times parsed and enums looked up; ``given`` for those that need more (nested records).
    A field the JSON leaves out, or one absent from the document, keeps its default."""
    values = dict(given)
    for f in fields(cls):  # type: ignore[arg-type]
        if f.name in values or not f.metadata.get("json", True) or f.name not in doc:
            continue
        value, kind = doc[f.name], _field_types(cls)[f.name]
        if value is not None and kind in (datetime, datetime | None):
            value = datetime.fromisoformat(value)
        elif isinstance(kind, type) and issubclass(kind, Enum):
            value = kind(value)
        values[f.name] = value
    return values


_FIELD_TYPES: dict[type, dict[str, Any]] = {}


def _field_types(cls: type[Record]) -> dict[str, Any]:
    known = _FIELD_TYPES.get(cls)
    if known is None:
        known = _FIELD_TYPES[cls] = get_type_hints(cls)
    return known


@dataclass(frozen=True)
class Counts(Record):
    """Items per state."""

    queued: int
    running: int
    succeeded: int
    failed: int
    cancelled: int
    expanded: int = 0  # documents whose pages became items of their own

    @classmethod
    def from_document(cls, doc: dict[str, int]) -> Counts:
        return cls(**{state.value: int(doc[state.value]) for state in ItemState})


@dataclass(frozen=True)
class TokenUsage(Record):
    """Tokens; image tokens are part of the input tokens."""

    input_tokens: int
    output_tokens: int
    image_tokens: int
    total_tokens: int

    @classmethod
    def from_document(cls, doc: dict[str, int]) -> TokenUsage:
        return cls(
            doc["input_tokens"], doc["output_tokens"], doc["image_tokens"], doc["total_tokens"]
        )


@dataclass(frozen=True)
class Batch(Record):
    """A batch as ``qocr status --json`` lists it; ``Client.submit`` and ``get`` return it."""

    id: int
    name: str
    state: BatchState
    stop_reason: str | None
    total: int
    created_at: datetime
    finished_at: datetime | None
    age_seconds: float
    idempotency_key: str | None
    done: int
    failed: int
    counts: Counts
    # Client.submit only: the idempotency key had made this batch already; nothing was created.
    existing: bool = field(default=False, metadata=_NOT_IN_JSON)

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> Batch:
        return cls(**_read(cls, doc, counts=Counts.from_document(doc["counts"])))


@dataclass(frozen=True)
class Throughput(Record):
    items_per_minute: float
    window_seconds: float
    finished_in_window: int


@dataclass(frozen=True)
class ModelCost(Record):
    model: str
    input_tokens: int
    output_tokens: int
    usd_per_million_input: float
    usd_per_million_output: float
    price_source: str
    usd: float


@dataclass(frozen=True)
class Cost(Record):
    """Estimated USD, per model named by the results."""

    currency: str
    region: str
    usd: float
    models: tuple[ModelCost, ...]

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> Cost:
        models = tuple(ModelCost(**model) for model in doc["models"])
        return cls(doc["currency"], doc["region"], doc["usd"], models)


@dataclass(frozen=True)
class DocumentCounts(Record):
    """Documents (sources: an image is a document of one page), pages (what is read as an
    image), and the documents split into pages so far."""

    documents: int
    pages: int
    expanded: int


@dataclass(frozen=True)
class Saved(Record):
    """What a batch's cached results did not cost: their originals' billed tokens, priced."""

    currency: str
    region: str
    usd: float
    input_tokens: int
    output_tokens: int


@dataclass(frozen=True)
class WebhookDelivery(Record):
    """One completion webhook of a batch end (docs/webhooks.md)."""

    delivery_id: str
    event: str
    url: str  # scheme and host only: the rest of a webhook URL is often its credential
    state: str  # pending, delivered, failed
    attempts: int
    last_http_status: int | None
    last_error: str | None
    created_at: datetime
    next_attempt_at: datetime | None
    delivered_at: datetime | None

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> WebhookDelivery:
        return cls(**_read(cls, doc))


@dataclass(frozen=True)
class RequestCounts(Record):
    """A provider batch's requests, as the provider last said."""

    total: int
    completed: int
    failed: int


@dataclass(frozen=True)
class Shard(Record):
    """One shard of a batch-mode batch: one uploaded file and its provider batch."""

    id: int
    state: str  # pending, submitted, collecting, done
    provider_status: str | None  # the Batch API's status; None before the batch exists
    provider_batch_id: str | None
    lines: int | None  # None until its calls are counted
    request_counts: RequestCounts
    error: str | None
    created_at: datetime
    submitted_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> Shard:
        return cls(**_read(cls, doc, request_counts=RequestCounts(**doc["request_counts"])))


@dataclass(frozen=True)
class BatchStatus(Record):
    """One batch in full, as ``qocr status BATCH --json`` prints it."""

    id: int
    name: str
    state: BatchState
    stop_reason: str | None
    total: int
    created_at: datetime
    finished_at: datetime | None
    age_seconds: float
    idempotency_key: str | None
    api: str
    mode: str  # "realtime" or "batch" (the provider's Batch API)
    model: str
    task: str | None
    counts: Counts
    done: int
    progress: float
    throughput: Throughput | None
    eta_seconds: float | None
    usage: TokenUsage
    finish_reasons: dict[str, int]
    truncated: int
    errors: dict[str, int]
    cost: Cost
    cached: int  # results reused from the cache (no call, nothing billed)
    documents: DocumentCounts
    saved: Saved
    notify_url: str | None
    webhooks: tuple[WebhookDelivery, ...]
    # Batch mode only (the document has no "shards" key for a realtime batch).
    shards: tuple[Shard, ...] | None = field(default=None, metadata={"absent_when_none": True})

    @classmethod
    def from_document(cls, doc: dict[str, Any]) -> BatchStatus:
        throughput = doc["throughput"]
        given: dict[str, Any] = {
            "counts": Counts.from_document(doc["counts"]),
            "throughput": None if throughput is None else Throughput(**throughput),
            "usage": TokenUsage.from_document(doc["usage"]),
            "finish_reasons": dict(doc["finish_reasons"]),
            "errors": dict(doc["errors"]),
            "cost": Cost.from_document(doc["cost"]),
            "documents": DocumentCounts(**doc["documents"]),
            "saved": Saved(**doc["saved"]),
            "webhooks": tuple(WebhookDelivery.from_document(d) for d in doc["webhooks"]),
        }
        if "shards" in doc:
            given["shards"] = tuple(Shard.from_document(d) for d in doc["shards"])
        return cls(**_read(cls, doc, **given))


@dataclass(frozen=True)
class ItemResult(Record):
    """One item and its result, as a ``qocr results`` JSONL line (result fields None
    for an item without a result)."""

    item_id: int
    batch_id: int
    source: str
    # A page of a document (``<source>#page=<n>``): the document's item id and the page.
    document_id: int | None
    page: int | None
    state: ItemState
    attempts: int
    error_code: str | None
    error_message: str | None
    created_at: datetime
    finished_at: datetime | None
    text: str | None
    kv_result: Any
    words_info: list[Any] | None
    parsed: Any
    finish_reason: str | None
    request_id: str | None
    model: str | None
    latency_ms: float | None
    cached_from: int | None  # reused from the cache: the item whose paid result it copies
    usage: TokenUsage | None

    @classmethod
    def from_row(cls, row: ItemRow, secret: str | None) -> ItemResult:
        """From the reports' row; error messages have ``secret`` masked (as item_json does)."""
        message = redact_text(row.error_message, secret) if row.error_message else None
        result = row.result
        usage = None
        if result is not None:
            usage = TokenUsage(
                result.usage.input_tokens,
                result.usage.output_tokens,
                result.usage.image_tokens,
                result.usage.total_tokens,
            )
        return cls(
            item_id=row.id,
            batch_id=row.batch_id,
            source=row.source,
            document_id=row.document_id,
            page=row.page,
            state=row.state,
            attempts=row.attempts,
            error_code=row.error_code,
            error_message=message,
            created_at=row.created_at,
            finished_at=row.finished_at,
            text=result.text if result else None,
            kv_result=result.kv_result if result else None,
            words_info=result.words_info if result else None,
            parsed=result.parsed if result else None,
            finish_reason=result.finish_reason if result else None,
            request_id=result.request_id if result else None,
            model=result.model if result else None,
            latency_ms=result.latency_ms if result else None,
            cached_from=result.cached_from if result else None,
            usage=usage,
        )


@dataclass(frozen=True)
class Rejection(Record):
    """A submit that made no batch: its code (e.g. ``source_not_found``) and message."""

    code: str
    message: str
    created_at: datetime


@dataclass(frozen=True)
class Submission(Record):
    """What became of the submits made with one idempotency key."""

    idempotency_key: str
    batch: Batch | None
    # The latest rejection under this key, unless a batch was made after it.
    rejection: Rejection | None


@dataclass(frozen=True)
class RetryOutcome(Record):
    """``Client.retry``: how many items went back to the queue, and the batch's state."""

    id: int
    requeued: int
    codes: tuple[str, ...]
    state: BatchState


@dataclass(frozen=True)
class CancelOutcome(Record):
    """``Client.cancel``: queued items cancelled now, and items still running."""

    id: int
    state: BatchState
    cancelled: int
    running: int
    previous_state: BatchState = field(default=BatchState.RUNNING, metadata=_NOT_IN_JSON)
