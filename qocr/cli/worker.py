"""``qocr worker``: the Celery worker (and the fleet's dispatcher), optionally with metrics."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

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
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    help="Serve Prometheus metrics on this port (/metrics); see docs/metrics.md.",
)
@click.option(
    "--metrics-host",
    default="0.0.0.0",  # noqa: S104  # a scrape target must be reachable from Prometheus
    show_default=True,
    help="Address the metrics server listens on.",
)
@click.option(
    "--metrics-dir",
    type=click.Path(file_okay=False, path_type=Path),
    envvar="PROMETHEUS_MULTIPROC_DIR",
    help="Where every worker process writes its counters (emptied at start; default: a "
    "fresh temporary directory, removed at exit).",
)
def worker(
    concurrency: int,
    pool: str,
    no_dispatch: bool,
    metrics_port: int | None,
    metrics_host: str,
    metrics_dir: Path | None,
) -> None:
    """Process queued items from the broker until stopped (SIGTERM: finish, then exit)."""
    settings = get_settings()
    settings.require_api_key()
    temporary = None
    if metrics_port is not None:
        from qocr.worker.metrics_server import serve

        if metrics_dir is None:
            metrics_dir = temporary = Path(tempfile.mkdtemp(prefix="qocr-metrics-"))
        # Before the app and its pool exist: every process forked later counts in the dir.
        serve(metrics_port, metrics_host, settings, metrics_dir)
    from qocr.worker.app import create_app
    from qocr.worker.service import run_worker

    try:
        app = create_app(settings)
        run_worker(app, settings, concurrency=concurrency, pool=pool, dispatch=not no_dispatch)
    finally:
        if temporary is not None:
            shutil.rmtree(temporary, ignore_errors=True)
