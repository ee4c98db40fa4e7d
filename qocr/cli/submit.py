"""``qocr submit``: create a batch in SQL and dispatch it to the workers (``Client.submit``)."""

from __future__ import annotations

import json
from typing import Any

import click

from qocr.api import Client
from qocr.cli.batch_options import batch_options, request_options
from qocr.settings import get_settings


@click.command()
@batch_options
@click.option(
    "--idempotency-key",
    metavar="KEY",
    help="Submit at most once for KEY: the same KEY and request again print the batch made "
    "the first time and create nothing; KEY with a different request is refused (exit 2).",
)
@click.option(
    "--mode",
    type=click.Choice(["realtime", "batch"]),
    default="realtime",
    show_default=True,
    help="batch: send the items through Model Studio's Batch API (half price, answers "
    "within 24 h, China (Beijing) region: QOCR_REGION=cn, compatible API, no streaming).",
)
def submit(idempotency_key: str | None, mode: str, **params: Any) -> None:
    """Create a batch of SOURCES (URLs, files, folders, s3://..., @manifest) for the workers.

    Prints the batch id. Workers (`qocr worker`) pick the items up; `qocr status ID` follows.
    """
    with Client(get_settings()) as client:
        batch = client.submit(
            list(params["sources"]),
            idempotency_key=idempotency_key,
            mode=mode,
            **request_options(params),
        )
    if params["as_json"]:
        click.echo(json.dumps({"id": batch.id, "items": batch.total, "existing": batch.existing}))
    elif batch.existing:
        click.echo(
            f"batch {batch.id}: {batch.total} items, submitted before with this idempotency "
            "key (nothing created)"
        )
    else:
        click.echo(f"batch {batch.id}: {batch.total} items queued")
