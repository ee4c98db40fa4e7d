"""``qocr submit``: create a batch in SQL and dispatch it to the workers."""

from __future__ import annotations

import json
from typing import Any

import click

from qocr.cli.batch_options import batch_options, build_request
from qocr.scheduler.submit import create_batch, open_store
from qocr.settings import get_settings


@click.command()
@batch_options
def submit(**params: Any) -> None:
    """Create a batch of SOURCES (URLs, files, folders, s3://..., @manifest) for the workers.

    Prints the batch id. Workers (`qocr worker`) pick the items up; `qocr status ID` follows.
    """
    import logging

    from qocr.worker.app import create_app
    from qocr.worker.publish import publish_now

    settings = get_settings()
    request = build_request(settings, params)
    store = open_store(settings)
    batch_id, count = create_batch(store, request, settings)
    try:
        # Under the fleet's lock: a running worker's dispatcher, if any, publishes instead.
        publish_now(create_app(settings), settings, store)
    except Exception as exc:  # the batch is safe in SQL; a worker's dispatcher sends it later
        logging.getLogger(__name__).warning(
            "batch %s saved but not dispatched yet (%s)", batch_id, type(exc).__name__
        )
    if params["as_json"]:
        click.echo(json.dumps({"id": batch_id, "items": count}))
    else:
        click.echo(f"batch {batch_id}: {count} items queued")
    store.engine.dispose()
