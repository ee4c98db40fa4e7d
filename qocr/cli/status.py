"""``qocr status``: the recent batches, or one batch's progress, tokens, errors and cost.

The parts: :mod:`qocr.cli.summary` reads the reports into JSON documents,
:mod:`qocr.cli.prices` prices them, :mod:`qocr.cli.render` draws them for people.
"""

from __future__ import annotations

from typing import Any

import click

from qocr.cli.prices import price_options, prices_from
from qocr.cli.reading import api_secret, dump, no_such, open_reports
from qocr.cli.render import follow, render_list, render_summary
from qocr.cli.summary import batch_document, batch_list
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
    watch: bool,
    interval: float,
    as_json: bool,
    **params: Any,
) -> None:
    """List recent batches, or show BATCH: items by state, throughput, tokens, errors, cost."""
    settings = get_settings()
    secret = api_secret(settings)
    if batch_id is None:
        if watch:
            raise click.UsageError("--watch needs a BATCH id")
        with open_reports(settings) as reports:
            documents = batch_list(reports, limit, BatchState(state) if state else None, secret)
        if as_json:
            click.echo(dump({"batches": documents}))
        else:
            render_list(documents)
        return
    prices = prices_from(settings, params)
    with open_reports(settings) as reports:
        if watch:
            if reports.batch(batch_id) is None:
                raise no_such("batch", batch_id)
            follow(reports, batch_id, interval, show_bar=not as_json)
        document = batch_document(reports, batch_id, prices, secret)
    if as_json:
        click.echo(dump(document))
    else:
        render_summary(document)
