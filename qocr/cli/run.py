"""``qocr run``: create a batch and process it here, with no broker (``Client.run``)."""

from __future__ import annotations

import json
from contextlib import ExitStack
from typing import Any

import click

from qocr.api import Batch, Client, Counts
from qocr.cli.batch_options import batch_options, request_options
from qocr.logs import configure_logging
from qocr.settings import get_settings


@click.command()
@batch_options
@click.option("--concurrency", default=8, show_default=True, help="Calls in flight at once.")
def run(concurrency: int, **params: Any) -> None:
    """Digitize SOURCES now, in this process, and store the results (no Redis needed)."""
    settings = get_settings()
    secret = settings.api_key.get_secret_value() if settings.api_key else None
    configure_logging("WARNING", secret)
    as_json = params["as_json"]
    with ExitStack() as stack:
        client = stack.enter_context(Client(settings))
        bar = _ProgressBar(stack) if not as_json else None
        batch = client.run(
            list(params["sources"]),
            concurrency=concurrency,
            on_start=bar.start if bar else None,
            on_progress=bar.update if bar else None,
            **request_options(params),
        )
    counts = batch.counts
    if as_json:
        click.echo(json.dumps({"id": batch.id, "items": batch.total, "counts": counts.to_dict()}))
    else:
        click.echo(
            f"batch {batch.id}: {counts.succeeded} succeeded, {counts.failed} failed, "
            f"{counts.cancelled} cancelled"
            + (f", {counts.expanded} documents split into pages" if counts.expanded else "")
            + f". Results: qocr results {batch.id}"
        )
    if counts.failed or counts.cancelled:
        raise SystemExit(1)


class _ProgressBar:
    """The rich progress bar, started once the batch exists (its size is known then)."""

    def __init__(self, stack: ExitStack) -> None:
        self._stack = stack
        self._progress: Any = None
        self._bar: Any = None

    def start(self, batch: Batch) -> None:
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
        )

        click.echo(f"batch {batch.id}: {batch.total} items")
        columns = (
            TextColumn("[bold]OCR[/bold]"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[failed]} failed"),
            TimeElapsedColumn(),
        )
        self._progress = self._stack.enter_context(Progress(*columns))
        self._bar = self._progress.add_task("ocr", total=batch.total, failed=0)

    def update(self, counts: Counts) -> None:
        if self._progress is None:
            return
        finished = counts.succeeded + counts.failed + counts.cancelled + counts.expanded
        # A document's pages join the batch when it is expanded: the total grows.
        total = finished + counts.queued + counts.running
        self._progress.update(self._bar, total=total, completed=finished, failed=counts.failed)
