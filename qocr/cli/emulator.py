"""``qocr emulator``: run the local Qwen-OCR emulator until SIGTERM / SIGINT."""

from __future__ import annotations

import asyncio

import click

from qocr.emulator.config import RECOGNIZERS, EmulatorConfig
from qocr.emulator.server import RunningServer, serve_until_signalled


@click.command("emulator")
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option(
    "--port",
    default=8000,
    show_default=True,
    type=click.IntRange(0, 65535),
    help="Port to listen on; 0 picks a free one (printed).",
)
@click.option("--rpm", type=click.IntRange(min=1), help="Requests per minute, enforced per second.")
@click.option("--tpm", type=click.IntRange(min=1), help="Tokens per minute (a sliding minute).")
@click.option(
    "--latency-ms",
    nargs=2,
    type=click.FloatRange(min=0),
    default=(0.0, 0.0),
    show_default=True,
    metavar="LO HI",
    help="Added latency per request, uniform in [LO, HI] milliseconds.",
)
@click.option(
    "--error-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Probability of an injected 500/503.",
)
@click.option(
    "--drop-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Probability of closing the connection with no (or half a) response.",
)
@click.option(
    "--hang-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Probability of reading a request and never answering it.",
)
@click.option(
    "--trickle-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Probability of a 200 whose body (or stream) comes one byte (keep-alive) a second.",
)
@click.option(
    "--long-fields-rate",
    type=click.FloatRange(0, 1),
    default=0.0,
    show_default=True,
    help="Probability of a 500 with a 300-char code and request id and a 5 MB message.",
)
@click.option("--api-key", help="Require 'Authorization: Bearer KEY' (default: accept any key).")
@click.option("--seed", type=int, help="Make faults, latency and request ids reproducible.")
@click.option(
    "--recognizer",
    type=click.Choice(RECOGNIZERS),
    default="auto",
    show_default=True,
    help="auto: RapidOCR when installed (the 'local' extra), else hash-derived words.",
)
def emulator(
    host: str,
    port: int,
    rpm: int | None,
    tpm: int | None,
    latency_ms: tuple[float, float],
    error_rate: float,
    drop_rate: float,
    hang_rate: float,
    trickle_rate: float,
    long_fields_rate: float,
    api_key: str | None,
    seed: int | None,
    recognizer: str,
) -> None:
    """Serve both Qwen-OCR APIs locally; point QOCR_BASE_URL at the printed URL."""
    try:
        config = EmulatorConfig(
            host=host,
            port=port,
            rpm=rpm,
            tpm=tpm,
            latency_ms=latency_ms,
            error_rate=error_rate,
            drop_rate=drop_rate,
            hang_rate=hang_rate,
            trickle_rate=trickle_rate,
            long_fields_rate=long_fields_rate,
            api_key=api_key,
            seed=seed,
            recognizer=recognizer,  # type: ignore[arg-type]  # click.Choice checked it
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc

    def ready(server: RunningServer) -> None:
        click.echo(f"qocr emulator listening on {server.base_url}", nl=True)
        shown_seed = "-" if seed is None else seed
        click.echo(
            f"  recognizer={server.state.recognizer.name} rpm={rpm or '-'} tpm={tpm or '-'} "
            f"error_rate={error_rate} drop_rate={drop_rate} seed={shown_seed}"
        )

    try:
        asyncio.run(serve_until_signalled(config, ready))
    except OSError as exc:
        raise click.ClickException(
            f"cannot listen on {host}:{port}: {exc.strerror or exc}"
        ) from exc
    except ValueError as exc:  # e.g. --recognizer rapidocr without the 'local' extra
        raise click.ClickException(str(exc)) from exc
    click.echo("qocr emulator stopped")
