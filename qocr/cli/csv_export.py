"""The CSV shape of ``qocr results``: one column per (flattened, dotted) result field.

OCR text and extracted fields are whatever the document said: a cell such as ``=HYPERLINK(...)``
would run as a formula when the export is opened in a spreadsheet (CSV injection). By
default such cells get a leading ``'``, which spreadsheets show as text; ``--csv-raw``
writes them verbatim for programs that read the CSV.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterable
from typing import IO, Any

from qocr.models.report_records import ItemRow
from qocr.redact import redact_text

BASE_COLUMNS = (
    "item_id",
    "source",
    "state",
    "finish_reason",
    "input_tokens",
    "output_tokens",
    "image_tokens",
    "total_tokens",
    "request_id",
    "error_code",
    "error_message",
    "attempts",
    "cached_from",
    "document_id",
    "page",
)
TEXT_COLUMN = "text"
# Results that are not a JSON object (a list, a string) go whole into this column.
KV_COLUMN = "kv_result"
# A cell starting with one of these is a formula to a spreadsheet (OWASP "CSV injection").
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")
# ...unless it is a plain number, which a spreadsheet reads as that number ("-12.50").
_PLAIN_NUMBER = re.compile(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?")


def defuse(text: str) -> str:
    """``text`` with a leading ``'`` when a spreadsheet would run it as a formula."""
    if text.startswith(FORMULA_STARTS) and not _PLAIN_NUMBER.fullmatch(text):
        return "'" + text
    return text


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Nested objects as dotted keys (``{"seller": {"name": x}}`` → ``{"seller.name": x}``).

    Lists and scalars are leaves; an empty object is a leaf too.
    """
    if not isinstance(value, dict) or (prefix and not value):
        return {prefix: value}
    flat: dict[str, Any] = {}
    for key, child in value.items():
        flat.update(flatten(child, f"{prefix}.{key}" if prefix else str(key)))
    return flat


def kv_columns_of(schema: dict[str, Any] | None, kv_results: Iterable[Any]) -> list[str]:
    """The CSV's result columns: the flattened schema, else every key seen, in order."""
    if schema:
        return list(flatten(schema))
    seen: dict[str, None] = {}
    whole = False
    for kv in kv_results:
        if isinstance(kv, dict):
            seen.update(dict.fromkeys(flatten(kv)))
        elif kv is not None:
            whole = True
    return [*seen, KV_COLUMN] if whole and KV_COLUMN not in seen else list(seen)


def header_of(kv_columns: list[str]) -> list[str]:
    """Base columns, result columns (``kv.``-prefixed where they clash), then the text."""
    taken = {*BASE_COLUMNS, TEXT_COLUMN}
    return [*BASE_COLUMNS, *(f"kv.{c}" if c in taken else c for c in kv_columns), TEXT_COLUMN]


def cell(value: Any, escape: bool = True) -> str:
    """One value as CSV text: JSON for lists and objects, strings defused unless ``escape``
    is off (numbers, booleans and JSON never start a formula)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return defuse(value) if escape else value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, ensure_ascii=False)


def csv_row(row: ItemRow, kv_columns: list[str], secret: str | None, escape: bool) -> list[str]:
    result = row.result
    usage = result.usage if result else None
    base = [
        row.id,
        row.source,
        row.state.value,
        result.finish_reason if result else None,
        usage.input_tokens if usage else None,
        usage.output_tokens if usage else None,
        usage.image_tokens if usage else None,
        usage.total_tokens if usage else None,
        result.request_id if result else None,
        row.error_code,
        redact_text(row.error_message, secret) if row.error_message else None,
        row.attempts,
        result.cached_from if result else None,
        row.document_id,
        row.page,
    ]
    kv = result.kv_result if result else None
    flat = flatten(kv) if isinstance(kv, dict) else {}
    if kv is not None and not isinstance(kv, dict):
        flat = {KV_COLUMN: kv}
    values = [flat.get(column) for column in kv_columns]
    return [cell(v, escape) for v in [*base, *values, result.text if result else None]]


def write_csv(
    rows: Iterable[ItemRow],
    stream: IO[str],
    kv_columns: list[str],
    secret: str | None,
    *,
    escape: bool = True,
) -> int:
    """The header and one line per row; returns how many rows were written."""
    writer = csv.writer(stream, lineterminator="\n")
    writer.writerow([cell(name, escape) for name in header_of(kv_columns)])
    count = 0
    for row in rows:
        writer.writerow(csv_row(row, kv_columns, secret, escape))
        count += 1
    return count
