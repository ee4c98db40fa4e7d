"""``qocr worker``: the Celery worker (and the fleet's dispatcher)."""

from __future__ import annotations

import click

from qocr.settings import get_settings


@click.command()
@click.option("--concurrency", "-c", default=16, show_default=True, help="Tasks at once.")
@click.option(
    "--pool",
    type=click.Choice(["prefork", "threads", "solo"]),
    default="prefork",
    show_default=True,
    help="prefork enforces time limits and survives a crashed child; threads is lighter.",
)
@click.option("--no-dispatch", is_flag=True, help="Do not run the dispatcher in this worker.")
def worker(concurrency: int, pool: str, no_dispatch: bool) -> None:
    """Process queued items from the broker until stopped (SIGTERM: finish, then exit)."""
    from qocr.worker.app import create_app
    from qocr.worker.service import run_worker

    settings = get_settings()
    settings.require_api_key()
    app = create_app(settings)
    run_worker(app, settings, concurrency=concurrency, pool=pool, dispatch=not no_dispatch)
