"""``qocr status`` for people: the batch table, one batch's summary, the ``--watch`` bar.

Everything here is drawn from the JSON documents of :mod:`models.batch_documents` (or, for the
bar, the live counts), so the human and the JSON output never disagree. rich is imported
only when something is drawn.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

import click

from qocr.models.report_records import FINISHED_STATES
from qocr.models.reports import Reports
from qocr.models.states import BatchState, ItemState

if TYPE_CHECKING:
    from rich.console import Console


def console() -> Console:
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
    console().print(table)


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
    for line in shard_lines(doc):
        grid.add_row("Shard", escape(line))
    grid.add_row("Age", f"{age(doc['age_seconds'])} (created {doc['created_at']})")
    grid.add_row(
        "Progress", f"{doc['done']:,}/{doc['total']:,} finished ({100 * doc['progress']:.1f}%)"
    )
    grid.add_row("Items", _pairs(doc["counts"]))
    documents = doc.get("documents")
    if documents and documents["expanded"]:
        grid.add_row(
            "Documents",
            f"{documents['documents']:,} documents · {documents['pages']:,} pages "
            f"({documents['expanded']:,} split into pages)",
        )
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
    if doc.get("fleet"):
        grid.add_row("Rate", escape(fleet_line(doc["fleet"])))
    cost = doc["cost"]
    sources = sorted({m["price_source"] for m in cost["models"]}) or ["catalog"]
    usd = cost["usd"]
    amount = f"{usd:,.6f}" if usd < 1 else f"{usd:,.2f}"
    grid.add_row("Cost", escape(f"~${amount} ({cost['region']} prices: {', '.join(sources)})"))
    if doc.get("cached"):
        grid.add_row("Cached", escape(cached_line(doc)))
    if doc.get("idempotency_key"):
        grid.add_row("Key", escape(doc["idempotency_key"]))
    for line in webhook_lines(doc):
        grid.add_row("Webhook", escape(line))
    console().print(grid)


def cached_line(doc: dict[str, Any]) -> str:
    """Results reused from the cache, and what paying for them again would have cost."""
    saved = doc["saved"]
    usd = saved["usd"]
    amount = f"{usd:,.6f}" if usd < 1 else f"{usd:,.2f}"
    return (
        f"{doc['cached']:,} item(s) from the cache, no call · saved ~${amount} "
        f"(input {saved['input_tokens']:,} · output {saved['output_tokens']:,} tokens)"
    )


def shard_lines(doc: dict[str, Any]) -> list[str]:
    """A batch-mode batch's shards: lines, our state, and the provider batch's status."""
    lines = []
    for shard in doc.get("shards") or []:
        counts = shard["request_counts"]
        provider = shard["provider_status"] or "not created yet"
        line = (
            f"#{shard['id']}: {shard['lines'] if shard['lines'] is not None else '-'} lines · "
            f"{shard['state']} · provider {provider} "
            f"({counts['completed']:,}/{counts['total']:,} done, {counts['failed']:,} failed)"
        )
        if shard["error"]:
            line += f" · {shard['error']}"
        lines.append(line)
    return lines


def fleet_line(fleet: dict[str, Any]) -> str:
    """The rate every worker shares for the batch's model now, and its recent 429s."""
    line = (
        f"{fleet['requests_per_minute']:,.0f} requests/min in use "
        f"({100 * fleet['share_of_ceiling']:.0f} % of the {fleet['rpm_ceiling']:,} ceiling)"
    )
    if fleet["share_429"] is None:
        return line + f" · no calls in the last {fleet['window_seconds']:.0f} s"
    return line + (
        f" · 429 {100 * fleet['share_429']:.1f} % of {fleet['calls']:,} calls "
        f"in the last {fleet['window_seconds']:.0f} s"
    )


def webhook_lines(doc: dict[str, Any]) -> list[str]:
    """One line per delivery of the batch's webhook, or where it will go when it ends."""
    deliveries = doc.get("webhooks") or []
    if not deliveries and doc.get("notify_url"):
        return [f"{doc['notify_url']}: when the batch ends"]
    lines = []
    for delivery in deliveries:
        tries = f"{delivery['attempts']} attempt{'s' if delivery['attempts'] != 1 else ''}"
        line = f"{delivery['event']} → {delivery['url']}: {delivery['state']} ({tries}"
        if delivery["state"] == "delivered":
            line += f", HTTP {delivery['last_http_status']} at {delivery['delivered_at']})"
        elif delivery["last_error"]:
            line += f", last: {delivery['last_error']}"
            if delivery["next_attempt_at"]:
                line += f"; next try {delivery['next_attempt_at']}"
            line += ")"
        else:
            line += ")"
        lines.append(f"{line} [{delivery['delivery_id']}]")
    return lines


def render_rejection(key: str, rejection: dict[str, Any]) -> None:
    """A submit under ``key`` that made no batch."""
    click.echo(
        f"submit with key {key} rejected at {rejection['created_at']}: "
        f"{rejection['code']}: {rejection['message']}"
    )


def follow(reports: Reports, batch_id: int, interval_seconds: float, show_bar: bool) -> None:
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
    with Progress(*columns, console=console(), disable=not show_bar) as progress:
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
            time.sleep(interval_seconds)
