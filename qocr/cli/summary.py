"""The JSON documents of ``qocr status``, read from the reports.

These documents are the source of truth: the human output is rendered from them, so both
always show the same numbers. Field names are documented in docs/cli-json.md.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from qocr.cli.prices import cost_json
from qocr.cli.reading import no_such
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
from qocr.models.states import BatchState, ItemState
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
) -> dict[str, Any]:
    """The document of ``qocr status BATCH --json``; an unknown id is a clear error."""
    summary = reports.summary(batch_id)
    if summary is None:
        raise no_such("batch", batch_id)
    now = utcnow()
    recent = None
    if summary.batch.state == BatchState.RUNNING:
        recent = reports.finished_since(batch_id, recent_window(summary.batch, now))
    return summary_json(summary, prices, recent, now, secret)


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
        "cost": cost_json(summary, prices),
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
