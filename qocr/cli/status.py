"""``qocr status``: the recent batches, or one batch's progress, tokens, errors and cost.

The documents come from the Python API (:class:`qocr.api.Client`), which reads them from
:mod:`models.batch_documents`; :mod:`qocr.cli.prices` prices them, :mod:`qocr.cli.render`
draws them for people.
"""

from __future__ import annotations

from typing import Any

import click

from qocr.api import Client, Submission
from qocr.cli.prices import price_options, prices_from
from qocr.cli.reading import dump
from qocr.cli.render import follow, render_list, render_rejection, render_summary
from qocr.models.reports import Reports
from qocr.models.states import BatchState
from qocr.settings import get_settings


@click.command()
@click.argument("batch_id", type=int, required=False)
@click.option("--limit", default=20, show_default=True, type=click.IntRange(min=1))
@click.option(
    "--state",
    type=click.Choice([state.value for state in BatchState]),
    help="List only batches in this state.",
)
@click.option(
    "--key",
    "idempotency_key",
    metavar="KEY",
    help="Show what the submits with this idempotency key made: its batch, or why none "
    "was made (a rejected `qocr.submit` message).",
)
@click.option("--watch", is_flag=True, help="Follow BATCH with a progress bar until it ends.")
@click.option(
    "--interval",
    default=1.0,
    show_default=True,
    type=click.FloatRange(min=0.1),
    help="Seconds between refreshes with --watch.",
)
@price_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON (see docs/cli-json.md).")
def status(
    batch_id: int | None,
    limit: int,
    state: str | None,
    idempotency_key: str | None,
    watch: bool,
    interval: float,
    as_json: bool,
    **params: Any,
) -> None:
    """List recent batches, or show BATCH: items by state, throughput, tokens, errors, cost."""
    settings = get_settings()
    with Client(settings) as client:
        if idempotency_key is not None:
            if batch_id is not None:
                raise click.UsageError("give BATCH or --key, not both")
            submission = client.get_by_key(idempotency_key)
            if submission.batch is None:
                _show_submission(submission, None, as_json)
                return
            batch_id = submission.batch.id
        else:
            submission = None
        if batch_id is None:
            if watch:
                raise click.UsageError("--watch needs a BATCH id")
            batches = client.recent(limit, BatchState(state) if state else None)
            documents = [batch.to_dict() for batch in batches]
            if as_json:
                click.echo(dump({"batches": documents}))
            else:
                render_list(documents)
            return
        prices = prices_from(settings, params)
        if watch:
            client.get(batch_id)  # an unknown id is an error before anything is drawn
            follow(Reports(client.engine), batch_id, interval, show_bar=not as_json)
        document = client.status_document(batch_id, prices=prices)
    if document["state"] == BatchState.RUNNING:
        from qocr.worker.throttle_redis import fleet_rate  # Redis only for a running batch

        rate = fleet_rate(
            settings.effective_redis_url, document["model"], settings.rpm, settings.tpm
        )
        document["fleet"] = None if rate is None else rate.to_dict()
    if submission is not None:
        _show_submission(submission, document, as_json)
    elif as_json:
        click.echo(dump(document))
    else:
        render_summary(document)


def _show_submission(
    submission: Submission, document: dict[str, Any] | None, as_json: bool
) -> None:
    """``status --key``: the batch's document (or null) and the rejection (or null)."""
    rejection = submission.rejection
    if as_json:
        shown = {
            "idempotency_key": submission.idempotency_key,
            "batch": document,
            "rejection": rejection.to_dict() if rejection else None,
        }
        click.echo(dump(shown))
        return
    if document is not None:
        render_summary(document)
    if rejection is not None:
        render_rejection(submission.idempotency_key, rejection.to_dict())
