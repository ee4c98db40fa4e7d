"""``qocr results --by document``: one record per document, its pages merged (JSONL or CSV).

The records are :func:`models.document_reports.document_json`'s; CSV flattens them like the
per-item export (one column per result field, the same formula-cell defence), with the
pages as a list of numbers and states.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Iterator
from typing import IO, Any

from qocr.cli.csv_export import KV_COLUMN, TEXT_COLUMN, cell, flatten
from qocr.cli.reading import dump
from qocr.models.document_reports import (
    DocumentReports,
    cost_usd,
    document_json,
    merge_document,
)
from qocr.pricing import PriceTable

DOCUMENT_COLUMNS = (
    "document_id",
    "source",
    "state",
    "page_count",
    "failed_pages",
    "finish_reason",
    "input_tokens",
    "output_tokens",
    "image_tokens",
    "total_tokens",
    "cost_usd",
    "error_code",
    "error_message",
    "conflicts",
)


def document_records(
    reports: DocumentReports,
    batch_id: int,
    prices: PriceTable,
    model: str,
    secret: str | None,
    state: str | None = None,
) -> Iterator[dict[str, Any]]:
    """The batch's documents as JSON records, streamed; ``state``: only documents in it."""
    for rows in reports.iter_documents(batch_id):
        merged = merge_document(rows)
        if state is not None and merged.state.value != state:
            continue
        yield document_json(rows, merged, cost_usd(merged, prices, model), secret)


def write_document_jsonl(records: Iterable[dict[str, Any]], stream: IO[str]) -> int:
    count = 0
    for record in records:
        stream.write(dump(record) + "\n")
        count += 1
    return count


def document_header(kv_columns: list[str]) -> list[str]:
    taken = {*DOCUMENT_COLUMNS, TEXT_COLUMN}
    return [*DOCUMENT_COLUMNS, *(f"kv.{c}" if c in taken else c for c in kv_columns), TEXT_COLUMN]


def document_row(record: dict[str, Any], kv_columns: list[str], escape: bool) -> list[str]:
    usage = record["usage"]
    base = [
        record["document_id"],
        record["source"],
        record["state"],
        record["page_count"],
        ",".join(str(page) for page in record["failed_pages"]),
        record["finish_reason"],
        usage["input_tokens"],
        usage["output_tokens"],
        usage["image_tokens"],
        usage["total_tokens"],
        record["cost_usd"],
        record["error_code"],
        record["error_message"],
        ",".join(record["conflicts"]),
    ]
    kv = record["kv_result"]
    flat = flatten(kv) if isinstance(kv, dict) else {}
    if kv is not None and not isinstance(kv, dict):
        flat = {KV_COLUMN: kv}
    values = [flat.get(column) for column in kv_columns]
    return [cell(value, escape) for value in [*base, *values, record["text"]]]


def write_document_csv(
    records: Iterable[dict[str, Any]], stream: IO[str], kv_columns: list[str], escape: bool
) -> int:
    """The header and one line per document; returns how many were written."""
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow([cell(name, escape) for name in document_header(kv_columns)])
    count = 0
    for record in records:
        writer.writerow(document_row(record, kv_columns, escape))
        count += 1
    return count
