"""``qocr status``: the recent batches, or one batch's progress, tokens, errors and cost.

The JSON documents built here are the source of truth: the human output is rendered from
them, so both always show the same numbers. Field names are documented in docs/cli-json.md.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from qocr.errors import ConfigError
from qocr.models.base import utcnow
from qocr.models.db import make_engine
from qocr.models.reports import FINISHED_STATES, BatchInfo, BatchLine, BatchSummary, Recent, Reports
from qocr.models.states import BatchState, ItemState
from qocr.pricing import PriceTable, price_table
from qocr.qwen.catalog import REGIONS
from qocr.redact import redact_text
from qocr.settings import Settings, get_settings

if TYPE_CHECKING:
    from rich.console import Console

F = TypeVar("F", bound=Callable[..., Any])

# Throughput is measured over the items that finished in this window (or since the batch
# started or was retried, when that is more recent).
THROUGHPUT_WINDOW = timedelta(minutes=5)
MIN_SPAN_SECONDS = 1.0
UNDEFINED_TABLE = "42P01"  # PostgreSQL's SQLSTATE for a missing table
# The JSON key for a result without a finish reason, or a failed item without a code.
UNKNOWN = "unknown"


@contextmanager
def open_reports(settings: Settings) -> Iterator[Reports]:
    """The reporting queries over the configured database; the engine is closed after.

    SQLite opens as every command opens it (a new file gets the schema). PostgreSQL is not
    checked up front: importing Alembic for the check would cost a status call ~0.2 s, so a
    missing schema is recognized from the first query's error instead.
    """
    from sqlalchemy.exc import ProgrammingError

    if settings.database_url.startswith("sqlite"):
        from qocr.scheduler.submit import open_store

        engine = open_store(settings).engine
    else:
        engine = make_engine(settings.database_url)
    try:
        yield Reports(engine)
    except ProgrammingError as exc:
        if getattr(exc.orig, "sqlstate", None) == UNDEFINED_TABLE:
            raise ConfigError(
                "the database has no qocr schema: run `qocr db upgrade` first"
            ) from None
        raise
    finally:
        engine.dispose()


def no_such(kind: str, ident: int) -> click.ClickException:
    return click.ClickException(f"no {kind} with id {ident}")


def iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


def dump(document: Any) -> str:
    return json.dumps(document, ensure_ascii=False)


def api_secret(settings: Settings) -> str | None:
    return settings.api_key.get_secret_value() if settings.api_key else None


def price_options(command: F) -> F:
    """``--region``, ``--prices``, ``--price-in`` and ``--price-out``."""
    decorators = [
        click.option(
            "--region",
            type=click.Choice(REGIONS),
            help="Price table region (default: QOCR_REGION).",
        ),
        click.option(
            "--prices",
            "prices_file",
            type=click.Path(dir_okay=False, path_type=Path),
            help="TOML/JSON file with [prices.REGION] entries (default: the qocr.toml one).",
        ),
        click.option(
            "--price-in", type=click.FloatRange(min=0), help="USD per million input tokens."
        ),
        click.option(
            "--price-out", type=click.FloatRange(min=0), help="USD per million output tokens."
        ),
    ]
    for decorator in reversed(decorators):
        command = decorator(command)
    return command


def prices_from(settings: Settings, params: dict[str, Any]) -> PriceTable:
    return price_table(
        params.get("region") or settings.region,
        prices_file=params.get("prices_file"),
        config_file=Path(settings.config),
        price_in=params.get("price_in"),
        price_out=params.get("price_out"),
    )


# -- documents -------------------------------------------------------------------------


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
    """The document of ``qocr status BATCH --json``."""
    batch, counts = summary.batch, summary.counts
    done = sum(counts[state] for state in FINISHED_STATES)
    total = sum(counts.values())
    throughput = eta = None
    if recent is not None:
        span = max((now - recent.since).total_seconds(), MIN_SPAN_SECONDS)
        per_second = recent.finished / span
        throughput = {
            "items_per_minute": round(per_second * 60, 3),
            "window_seconds": round(span, 3),
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


def cost_json(summary: BatchSummary, prices: PriceTable) -> dict[str, Any]:
    """Estimated USD: input tokens (image tokens included) and output tokens at model prices."""
    models = []
    total = 0.0
    for model, usage in sorted(summary.usage_by_model.items()):
        price = prices.price(model)
        cost = price.cost(usage.input_tokens, usage.output_tokens)
        total += cost
        models.append(
            {
                "model": model,
                "input_tokens": usage.input_tokens,
                "output_tokens": usage.output_tokens,
                "usd_per_million_input": price.input_per_million,
                "usd_per_million_output": price.output_per_million,
                "price_source": price.source,
                "usd": round(cost, 6),
            }
        )
    return {"currency": "USD", "region": prices.region, "usd": round(total, 6), "models": models}


# -- the command -----------------------------------------------------------------------


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
            lines = reports.recent_batches(limit, BatchState(state) if state else None)
        now = utcnow()
        documents = [line_json(line, now, secret) for line in lines]
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


def batch_document(
    reports: Reports, batch_id: int, prices: PriceTable, secret: str | None
) -> dict[str, Any]:
    summary = reports.summary(batch_id)
    if summary is None:
        raise no_such("batch", batch_id)
    now = utcnow()
    recent = None
    if summary.batch.state == BatchState.RUNNING:
        recent = reports.finished_since(batch_id, recent_window(summary.batch, now))
    return summary_json(summary, prices, recent, now, secret)


def follow(reports: Reports, batch_id: int, interval: float, show_bar: bool) -> None:
    """Poll the batch's counts until it is no longer running (or has nothing left to do)."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    columns = (
        TextColumn(f"[bold]batch {batch_id}[/bold]"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[failed]} failed"),
        TimeElapsedColumn(),
        TextColumn("ETA"),
        TimeRemainingColumn(),
    )
    with Progress(*columns, console=_console(), disable=not show_bar) as progress:
        bar = progress.add_task("batch", total=None, failed=0)
        while True:
            batch = reports.batch(batch_id)
            counts = reports.counts(batch_id)
            done = sum(counts[state] for state in FINISHED_STATES)
            progress.update(
                bar,
                total=sum(counts.values()),
                completed=done,
                failed=counts[ItemState.FAILED],
            )
            open_items = counts[ItemState.QUEUED] + counts[ItemState.RUNNING]
            if batch is None or batch.state != BatchState.RUNNING or open_items == 0:
                return
            time.sleep(interval)


# -- human output ----------------------------------------------------------------------


def _console() -> Console:
    from rich.console import Console

    # Not a terminal (a pipe, a test): no colours or cursor movement, lines kept whole.
    return Console(highlight=False, soft_wrap=True)


def age(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size:
            return f"{seconds / size:.0f}{unit}"
    return f"{seconds:.0f}s"


def render_list(documents: list[dict[str, Any]]) -> None:
    from rich.table import Table

    if not documents:
        click.echo("no batches")
        return
    table = Table(box=None, pad_edge=False)
    for header, justify in (
        ("ID", "right"),
        ("NAME", "left"),
        ("STATE", "left"),
        ("DONE/TOTAL", "right"),
        ("FAILED", "right"),
        ("AGE", "right"),
    ):
        table.add_column(header, justify=justify)  # type: ignore[arg-type]
    for doc in documents:
        table.add_row(
            str(doc["id"]),
            doc["name"],
            doc["state"],
            f"{doc['done']}/{doc['total']}",
            str(doc["failed"]),
            age(doc["age_seconds"]),
        )
    _console().print(table)


def _pairs(mapping: dict[str, int]) -> str:
    return " · ".join(f"{key} {value:,}" for key, value in mapping.items()) or "none"


def render_summary(doc: dict[str, Any]) -> None:
    from rich.markup import escape
    from rich.table import Table

    grid = Table.grid(padding=(0, 2))
    grid.add_column(style="bold")
    grid.add_column()
    state = doc["state"] + (f" ({doc['stop_reason']})" if doc["stop_reason"] else "")
    grid.add_row("Batch", escape(f"{doc['id']}  {doc['name']}"))
    grid.add_row("State", escape(state))
    task = f" · task {doc['task']}" if doc["task"] else ""
    grid.add_row("Model", escape(f"{doc['model']} ({doc['api']} API){task}"))
    grid.add_row("Age", f"{age(doc['age_seconds'])} (created {doc['created_at']})")
    grid.add_row(
        "Progress", f"{doc['done']:,}/{doc['total']:,} finished ({100 * doc['progress']:.1f}%)"
    )
    grid.add_row("Items", _pairs(doc["counts"]))
    if doc["throughput"] is not None:
        speed = f"{doc['throughput']['items_per_minute']:,.1f} items/min"
        eta = doc["eta_seconds"]
        grid.add_row("Speed", speed + (f" · ETA {age(eta)}" if eta is not None else " · ETA -"))
    usage = doc["usage"]
    grid.add_row(
        "Tokens",
        f"input {usage['input_tokens']:,} (image {usage['image_tokens']:,}) · "
        f"output {usage['output_tokens']:,} · total {usage['total_tokens']:,}",
    )
    finish = escape(_pairs(doc["finish_reasons"]))
    if doc["truncated"]:
        finish += f"  [yellow]warning: {doc['truncated']:,} answer(s) cut at max_tokens[/yellow]"
    grid.add_row("Finish", finish)
    grid.add_row("Errors", escape(_pairs(doc["errors"])))
    cost = doc["cost"]
    sources = sorted({m["price_source"] for m in cost["models"]}) or ["catalog"]
    usd = cost["usd"]
    amount = f"{usd:,.6f}" if usd < 1 else f"{usd:,.2f}"
    grid.add_row("Cost", escape(f"~${amount} ({cost['region']} prices: {', '.join(sources)})"))
    _console().print(grid)
