"""``qocr show``, ``qocr retry`` and ``qocr cancel``: one item in full, and a batch's controls.

Retry and cancel are the Python API's (``Client.retry``, ``Client.cancel``, over the store's
transitions); this module only reports what changed.
"""

from __future__ import annotations

from typing import Any

import click

from qocr.api import Client
from qocr.cli.reading import api_secret, dump, no_such, open_reports
from qocr.models.document_reports import DocumentReports
from qocr.models.documents import iso, item_json
from qocr.models.report_records import AttemptInfo, ItemDetail, ItemRow
from qocr.models.states import BatchState
from qocr.redact import redact_text
from qocr.settings import get_settings

JSON_OPTION = click.option("--json", "as_json", is_flag=True, help="Print JSON.")


# -- show ------------------------------------------------------------------------------


def attempt_json(attempt: AttemptInfo, secret: str | None) -> dict[str, Any]:
    message = attempt.error_message
    return {
        "number": attempt.number,
        "outcome": attempt.outcome.value,
        "started_at": iso(attempt.started_at),
        "ended_at": iso(attempt.ended_at),
        "http_status": attempt.http_status,
        "error_code": attempt.error_code,
        "error_message": redact_text(message, secret) if message else None,
        "request_id": attempt.request_id,
        "retry_after": attempt.retry_after,
        "worker": attempt.worker,
    }


def detail_json(
    detail: ItemDetail, secret: str | None, pages: list[ItemRow] | None = None
) -> dict[str, Any]:
    """The document of ``qocr show ITEM --json``: the JSONL line plus the attempt history,
    and for a document (PDF, TIFF) split into pages, its pages in order."""
    return {
        **item_json(detail.item, secret),
        "batch_name": detail.batch_name,
        "not_before": iso(detail.not_before),
        "pages": [page_json(page, secret) for page in pages or []],
        "history": [attempt_json(attempt, secret) for attempt in detail.history],
    }


def page_json(page: ItemRow, secret: str | None) -> dict[str, Any]:
    """One page of a document, as ``qocr show DOCUMENT`` lists it."""
    result = page.result
    message = page.error_message
    return {
        "page": page.page,
        "item_id": page.id,
        "state": page.state.value,
        "finish_reason": result.finish_reason if result else None,
        "total_tokens": result.usage.total_tokens if result else None,
        "error_code": page.error_code,
        "error_message": redact_text(message, secret) if message else None,
    }


@click.command()
@click.argument("item_id", type=int)
@JSON_OPTION
def show(item_id: int, as_json: bool) -> None:
    """Show item ITEM_ID: its state, its result and every attempt."""
    settings = get_settings()
    with open_reports(settings) as reports:
        detail = reports.item(item_id)
        pages = DocumentReports(reports.engine).pages_of(item_id) if detail else []
    if detail is None:
        raise no_such("item", item_id)
    document = detail_json(detail, api_secret(settings), pages)
    if as_json:
        click.echo(dump(document))
        return
    _render_detail(document)


def _render_detail(doc: dict[str, Any]) -> None:
    lines = [
        f"item {doc['item_id']}  batch {doc['batch_id']} ({doc['batch_name']})",
        f"source      {doc['source']}",
        f"state       {doc['state']}  ({doc['attempts']} attempts)",
    ]
    if doc["document_id"] is not None:
        lines.append(f"document    item {doc['document_id']}, page {doc['page']}")
    if doc["error_code"]:
        lines.append(f"error       {doc['error_code']}: {doc['error_message']}")
    if doc["usage"] is not None:
        usage = doc["usage"]
        lines.append(
            f"result      finish {doc['finish_reason']} · tokens in {usage['input_tokens']} "
            f"(image {usage['image_tokens']}) out {usage['output_tokens']} · "
            f"request {doc['request_id']}"
        )
    if doc.get("cached_from") is not None:
        lines.append(f"cached      from item {doc['cached_from']} (no call, nothing billed)")
    if doc["kv_result"] is not None:
        lines.append("kv_result   " + dump(doc["kv_result"]))
    if doc["text"] is not None:
        lines += ["text", *("  " + line for line in doc["text"].splitlines())]
    if doc["pages"]:
        lines.append(f"pages       {len(doc['pages'])}")
    for page in doc["pages"]:
        how = page["error_code"] or page["finish_reason"] or ""
        lines.append(
            f"  page {page['page']}: item {page['item_id']} {page['state']}"
            + (f" ({how})" if how else "")
        )
    lines.append("attempts" if doc["history"] else "attempts    none")
    for attempt in doc["history"]:
        error = (
            f" {attempt['error_code']}: {attempt['error_message']}" if attempt["error_code"] else ""
        )
        status = f" HTTP {attempt['http_status']}" if attempt["http_status"] else ""
        lines.append(
            f"  #{attempt['number']} {attempt['outcome']}{status} {attempt['started_at']}{error}"
        )
    click.echo("\n".join(lines))


# -- retry and cancel ------------------------------------------------------------------


def _split_codes(values: tuple[str, ...]) -> list[str]:
    return [code.strip() for value in values for code in value.split(",") if code.strip()]


@click.command()
@click.argument("batch_id", type=int)
@click.option(
    "--codes",
    multiple=True,
    metavar="CODE[,CODE...]",
    help="Only items whose last error is one of these codes (repeatable).",
)
@JSON_OPTION
def retry(batch_id: int, codes: tuple[str, ...], as_json: bool) -> None:
    """Put the failed and cancelled items of BATCH back in the queue.

    Running workers (`qocr worker`) dispatch them again within a second.
    """
    wanted = _split_codes(codes)
    with Client(get_settings()) as client:
        outcome = client.retry(batch_id, wanted)
    if as_json:
        click.echo(dump(outcome.to_dict()))
    elif outcome.requeued:
        click.echo(
            f"batch {batch_id}: {outcome.requeued} items queued again (batch {outcome.state.value})"
        )
    else:
        which = f" with code {', '.join(wanted)}" if wanted else ""
        click.echo(f"batch {batch_id}: no failed or cancelled items{which} to retry")


@click.command()
@click.argument("batch_id", type=int)
@JSON_OPTION
def cancel(batch_id: int, as_json: bool) -> None:
    """Cancel BATCH: its queued items are cancelled now; running items finish."""
    with Client(get_settings()) as client:
        outcome = client.cancel(batch_id)
    if as_json:
        click.echo(dump(outcome.to_dict()))
    elif outcome.previous_state != BatchState.RUNNING and not outcome.cancelled:
        click.echo(f"batch {batch_id} is {outcome.previous_state.value}: nothing to cancel")
    else:
        click.echo(
            f"batch {batch_id} {outcome.state.value}: {outcome.cancelled} queued items "
            f"cancelled, {outcome.running} running items will finish"
        )
