"""Pricing for ``qocr status``: the price options (the cost itself: models.batch_documents)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from qocr.pricing import PriceTable, price_table
from qocr.qwen.catalog import REGIONS
from qocr.settings import Settings

F = TypeVar("F", bound=Callable[..., Any])


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
    """The price table the options (else the settings and qocr.toml) ask for."""
    return price_table(
        params.get("region") or settings.region,
        prices_file=params.get("prices_file"),
        config_file=Path(settings.config),
        price_in=params.get("price_in"),
        price_out=params.get("price_out"),
    )
