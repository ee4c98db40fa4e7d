"""A batch as the JSON documents of ``qocr status``: the list line and the full summary.

One builder for every reader: ``qocr status --json`` prints these documents, the human
output is drawn from them, the Python API's records are read from them, and a completion
webhook POSTs the summary as it was when the batch ended. Field names are documented,
and kept stable, in docs/cli-json.md.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from qocr.models.base import utcnow
from qocr.models.documents import iso
from qocr.models.report_records import (
    FINISHED_STATES,
    BatchInfo,
    BatchLine,
    BatchSummary,
    Recent,
)
from qocr.models.reports import Reports
from qocr.models.shard_store import BATCH_MODE, ShardInfo, ShardStore
from qocr.models.states import BatchState, ItemState
from qocr.models.webhooks import DeliveryInfo
from qocr.pricing import PriceTable
from qocr.redact import redact_text

# Throughput is measured over the items that finished in this window (or since the batch
# started or was retried, when that is more recent).
THROUGHPUT_WINDOW = timedelta(minutes=5)
MIN_SPAN_SECONDS = 1.0
# The JSON key for a result without a finish reason, or a failed item without a code.
UNKNOWN = "unknown"


def batch_list(
    reports: Reports, limit: int, state: BatchState | None, secret: str | None
) -> list[dict[str, Any]]:
    """The documents of ``qocr status --json``: the most recent batches first."""
    lines = reports.recent_batches(limit, state)
    now = utcnow()
    return [line_json(line, now, secret) for line in lines]


def batch_document(
    reports: Reports, batch_id: int, prices: PriceTable, secret: str | None
) -> dict[str, Any] | None:
    """The document of ``qocr status BATCH --json``; None for an unknown id."""
    summary = reports.summary(batch_id)
    if summary is None:
        return None
    now = utcnow()
    recent = None
    if summary.batch.state == BatchState.RUNNING:
        recent = reports.finished_since(batch_id, recent_window(summary.batch, now))
    document = summary_json(summary, prices, recent, now, secret)
    if summary.batch.mode == BATCH_MODE:
        shards = ShardStore(reports.engine).shards_of(batch_id)
        document["shards"] = [shard_json(shard, secret) for shard in shards]
    return document


def shard_json(shard: ShardInfo, secret: str | None) -> dict[str, Any]:
    """One shard of a batch-mode batch: ours and the provider's view of it."""
    error = shard.error_message
    return {
        "id": shard.id,
        "state": shard.state.value,
        "provider_status": shard.provider_status,
        "provider_batch_id": shard.provider_batch_id,
        "lines": shard.lines,
        "request_counts": {
            "total": shard.total,
            "completed": shard.completed,
            "failed": shard.failed,
        },
        "error": redact_text(error, secret) if error else None,
        "created_at": iso(shard.created_at),
        "submitted_at": iso(shard.submitted_at),
        "finished_at": iso(shard.finished_at),
    }


def counts_json(counts: dict[ItemState, int]) -> dict[str, int]:
    return {state.value: counts[state] for state in ItemState}


def _batch_head(batch: BatchInfo, now: datetime, secret: str | None) -> dict[str, Any]:
    return {
        "id": batch.id,
        "name": batch.name,
        "state": batch.state.value,
        "stop_reason": redact_text(batch.stop_reason, secret) if batch.stop_reason else None,
        "total": batch.total,
        "created_at": iso(batch.created_at),
        "finished_at": iso(batch.finished_at),
        "age_seconds": round((now - batch.created_at).total_seconds(), 3),
        "idempotency_key": batch.idempotency_key,
    }


def line_json(line: BatchLine, now: datetime, secret: str | None) -> dict[str, Any]:
    return {
        **_batch_head(line.batch, now, secret),
        "done": line.done,
        "failed": line.counts[ItemState.FAILED],
        "counts": counts_json(line.counts),
    }


def recent_window(batch: BatchInfo, now: datetime) -> datetime:
    """Since when finished items count toward throughput: the window, or the last (re)start."""
    return max(now - THROUGHPUT_WINDOW, batch.updated_at)


def summary_json(
    summary: BatchSummary,
    prices: PriceTable,
    recent: Recent | None,
    now: datetime,
    secret: str | None,
) -> dict[str, Any]:
    """One batch: counts, progress, throughput and ETA, usage, finish reasons, errors, cost."""
    batch, counts = summary.batch, summary.counts
    done = sum(counts[state] for state in FINISHED_STATES)
    total = sum(counts.values())
    throughput = eta = None
    if recent is not None:
        span_seconds = max((now - recent.since).total_seconds(), MIN_SPAN_SECONDS)
        per_second = recent.finished / span_seconds
        throughput = {
            "items_per_minute": round(per_second * 60, 3),
            "window_seconds": round(span_seconds, 3),
            "finished_in_window": recent.finished,
        }
        remaining = counts[ItemState.QUEUED] + counts[ItemState.RUNNING]
        eta = round(remaining / per_second, 1) if per_second > 0 else None
    reasons = {
        reason or UNKNOWN: n for reason, n in sorted(summary.finish_reasons.items(), key=_key)
    }
    return {
        **_batch_head(batch, now, secret),
        "api": batch.api,
        "mode": batch.mode,
        "model": batch.model,
        "task": batch.task,
        "counts": counts_json(counts),
        "done": done,
        "progress": round(done / total, 6) if total else 1.0,
        "throughput": throughput,
        "eta_seconds": eta,
        "usage": usage_json(summary),
        "finish_reasons": reasons,
        "truncated": summary.finish_reasons.get("length", 0),
        "errors": {code or UNKNOWN: n for code, n in sorted(summary.errors.items(), key=_key)},
        "cost": cost_json(summary, prices.for_mode(batch.mode)),
        "cached": summary.cached,
        "documents": documents_json(summary),
        "saved": saved_json(summary, prices),
        "notify_url": shown_url(batch.notify_url) if batch.notify_url else None,
    }


def _key(pair: tuple[str | None, int]) -> tuple[int, str]:
    return (-pair[1], pair[0] or "")


def usage_json(summary: BatchSummary) -> dict[str, int]:
    usage = summary.usage
    return {
        "input_tokens": usage.input_tokens,
        "output_tokens": usage.output_tokens,
        "image_tokens": usage.image_tokens,
        "total_tokens": usage.total_tokens,
    }


def cost_json(summary: BatchSummary, prices: PriceTable) -> dict[str, Any]:
    """Estimated USD: input tokens (image tokens included) and output tokens at model prices."""
    models = []
    total_usd = 0.0
    for model, usage in sorted(summary.usage_by_model.items()):
        price = prices.price(model)
        usd = price.cost(usage.input_tokens, usage.output_tokens)
        total_usd += usd
        models.append(
            {
                "model": model,
                "input_tokens": usage.input_tokens,
                "output_tokens": usage.output_tokens,
                "usd_per_million_input": price.input_per_million,
                "usd_per_million_output": price.output_per_million,
                "price_source": price.source,
                "usd": round(usd, 6),
            }
        )
    return {
        "currency": "USD",
        "region": prices.region,
        "usd": round(total_usd, 6),
        "models": models,
    }


def documents_json(summary: BatchSummary) -> dict[str, int]:
    """Documents (the sources submitted: an image is a document of one page) and pages (what
    is read as an image: every image, every page of a split PDF or TIFF, and each document
    not split yet). Expanded documents are the ones split into pages."""
    total = summary.batch.total
    expanded = summary.counts[ItemState.EXPANDED]
    return {
        "documents": total - summary.page_items,
        "pages": total - expanded,
        "expanded": expanded,
    }


def saved_json(summary: BatchSummary, prices: PriceTable) -> dict[str, Any]:
    """What the batch's cached results did not cost: their originals' billed tokens, priced
    like :func:`cost_json` at the prices in force now."""
    usd = 0.0
    input_tokens = output_tokens = 0
    for model, usage in summary.saved_by_model.items():
        usd += prices.price(model).cost(usage.input_tokens, usage.output_tokens)
        input_tokens += usage.input_tokens
        output_tokens += usage.output_tokens
    return {
        "currency": "USD",
        "region": prices.region,
        "usd": round(usd, 6),
        "input_tokens": input_tokens,
        "output_tokens": output_tokens,
    }


def shown_url(url: str) -> str:
    """A webhook URL as shown to people: scheme and host only.

    The path and query of a webhook URL are often its credential (a Slack or Teams
    incoming-webhook URL is a secret), so they never reach a terminal or a log.
    """
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port is not None:
        host = f"{host}:{parts.port}"
    rest = "/…" if parts.path.strip("/") or parts.query else "/"
    return f"{parts.scheme}://{host}{rest}"


def delivery_json(delivery: DeliveryInfo, secret: str | None) -> dict[str, Any]:
    """One webhook delivery of a batch, for ``qocr status BATCH``."""
    error = delivery.last_error
    return {
        "delivery_id": delivery.delivery_id,
        "event": delivery.event,
        "url": shown_url(delivery.url),
        "state": delivery.state.value,
        "attempts": delivery.attempts,
        "last_http_status": delivery.last_http_status,
        "last_error": redact_text(error, secret) if error else None,
        "created_at": iso(delivery.created_at),
        "next_attempt_at": iso(delivery.next_attempt_at),
        "delivered_at": iso(delivery.delivered_at),
    }
