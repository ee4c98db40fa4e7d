"""``qocr show``, ``qocr retry`` and ``qocr cancel``: one item in full, and a batch's controls.

Retry and cancel are the store's transitions (:meth:`Store.requeue_failed`,
:meth:`Store.cancel_batch`); this module only checks the id and reports what changed.
"""

from __future__ import annotations

from typing import Any

import click

from qocr.cli.reading import api_secret, dump, no_such, open_reports
from qocr.models.documents import iso, item_json
from qocr.models.report_records import AttemptInfo, ItemDetail
from qocr.models.reports import Reports
from qocr.models.states import BatchState, ItemState
from qocr.models.store import Store
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


def detail_json(detail: ItemDetail, secret: str | None) -> dict[str, Any]:
    """The document of ``qocr show ITEM --json``: the JSONL line plus the attempt history."""
    return {
        **item_json(detail.item, secret),
        "batch_name": detail.batch_name,
        "not_before": iso(detail.not_before),
        "history": [attempt_json(attempt, secret) for attempt in detail.history],
    }


@click.command()
@click.argument("item_id", type=int)
@JSON_OPTION
def show(item_id: int, as_json: bool) -> None:
    """Show item ITEM_ID: its state, its result and every attempt."""
    settings = get_settings()
    with open_reports(settings) as reports:
        detail = reports.item(item_id)
    if detail is None:
        raise no_such("item", item_id)
    document = detail_json(detail, api_secret(settings))
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
    if doc["error_code"]:
        lines.append(f"error       {doc['error_code']}: {doc['error_message']}")
    if doc["usage"] is not None:
        usage = doc["usage"]
        lines.append(
            f"result      finish {doc['finish_reason']} · tokens in {usage['input_tokens']} "
            f"(image {usage['image_tokens']}) out {usage['output_tokens']} · "
            f"request {doc['request_id']}"
        )
    if doc["kv_result"] is not None:
        lines.append("kv_result   " + dump(doc["kv_result"]))
    if doc["text"] is not None:
        lines += ["text", *("  " + line for line in doc["text"].splitlines())]
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
    with open_reports(get_settings()) as reports:
        _require_batch(reports, batch_id)
        eligible = reports.requeueable(batch_id, wanted)
        # requeue_failed also reopens the batch; with nothing to requeue it would be left
        # "running" with no item to finish it.
        requeued = Store(reports.engine).requeue_failed(batch_id, wanted) if eligible else 0
        state = _require_batch(reports, batch_id).value
    if as_json:
        click.echo(dump({"id": batch_id, "requeued": requeued, "codes": wanted, "state": state}))
    elif requeued:
        click.echo(f"batch {batch_id}: {requeued} items queued again (batch {state})")
    else:
        which = f" with code {', '.join(wanted)}" if wanted else ""
        click.echo(f"batch {batch_id}: no failed or cancelled items{which} to retry")


@click.command()
@click.argument("batch_id", type=int)
@JSON_OPTION
def cancel(batch_id: int, as_json: bool) -> None:
    """Cancel BATCH: its queued items are cancelled now; running items finish."""
    with open_reports(get_settings()) as reports:
        before = _require_batch(reports, batch_id)
        cancelled = Store(reports.engine).cancel_batch(batch_id)
        state = _require_batch(reports, batch_id)
        running = reports.counts(batch_id)[ItemState.RUNNING]
    if as_json:
        document = {
            "id": batch_id,
            "state": state.value,
            "cancelled": cancelled,
            "running": running,
        }
        click.echo(dump(document))
    elif before != BatchState.RUNNING and not cancelled:
        click.echo(f"batch {batch_id} is {before.value}: nothing to cancel")
    else:
        click.echo(
            f"batch {batch_id} {state.value}: {cancelled} queued items cancelled, "
            f"{running} running items will finish"
        )


def _require_batch(reports: Reports, batch_id: int) -> BatchState:
    batch = reports.batch(batch_id)
    if batch is None:
        raise no_such("batch", batch_id)
    return batch.state
