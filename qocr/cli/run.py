"""``qocr run``: create a batch and process it here, with no broker (the embedded mode)."""

from __future__ import annotations

import json
from typing import Any

import click
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from qocr.cli.batch_options import batch_options, build_request
from qocr.logs import configure_logging
from qocr.migrations.database import open_database
from qocr.models.states import TERMINAL_ITEM_STATES, ItemState
from qocr.models.store import Store
from qocr.scheduler.submit import create_batch
from qocr.settings import get_settings
from qocr.worker.embedded import run_batch
from qocr.worker.process import ItemProcessor
from qocr.worker.runtime import memory_runtime


@click.command()
@batch_options
@click.option("--concurrency", default=8, show_default=True, help="Calls in flight at once.")
def run(concurrency: int, **params: Any) -> None:
    """Digitize SOURCES now, in this process, and store the results (no Redis needed)."""
    settings = get_settings()
    secret = settings.api_key.get_secret_value() if settings.api_key else None
    configure_logging("WARNING", secret)
    settings.require_api_key()
    request = build_request(settings, params)
    store = Store(open_database(settings))
    runtime = memory_runtime(settings, store)
    batch_id, count = create_batch(store, request, settings)
    processor = ItemProcessor(runtime)
    if params["as_json"]:
        counts = run_batch(processor, batch_id, concurrency)
    else:
        click.echo(f"batch {batch_id}: {count} items")
        counts = _run_with_progress(processor, batch_id, count, concurrency)
    runtime.close()
    summary = {state.value: counts[state] for state in ItemState}
    if params["as_json"]:
        click.echo(json.dumps({"id": batch_id, "items": count, "counts": summary}))
    else:
        click.echo(
            f"batch {batch_id}: {summary['succeeded']} succeeded, {summary['failed']} failed, "
            f"{summary['cancelled']} cancelled. Results: qocr results {batch_id}"
        )
    if counts[ItemState.FAILED] or counts[ItemState.CANCELLED]:
        raise SystemExit(1)


def _run_with_progress(
    processor: ItemProcessor, batch_id: int, total: int, concurrency: int
) -> dict[ItemState, int]:
    columns = (
        TextColumn("[bold]OCR[/bold]"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[failed]} failed"),
        TimeElapsedColumn(),
    )
    with Progress(*columns) as progress:
        bar = progress.add_task("ocr", total=total, failed=0)

        def update(counts: dict[ItemState, int]) -> None:
            finished = sum(counts[state] for state in TERMINAL_ITEM_STATES)
            progress.update(bar, completed=finished, failed=counts[ItemState.FAILED])

        return run_batch(processor, batch_id, concurrency, on_progress=update)
