"""Pricing for ``qocr status``: the price options, and a batch's estimated cost as JSON."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from qocr.models.report_records import BatchSummary
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


def cost_json(summary: BatchSummary, prices: PriceTable) -> dict[str, Any]:
    """Estimated USD: input tokens (image tokens included) and output tokens at model prices."""
    models = []
    total_usd = 0.0
    for model, usage in sorted(summary.usage_by_model.items()):
        price = prices.price(model)
        usd = price.cost(usage.input_tokens, usage.output_tokens)
        total_usd += usd
        models.append(
            {
                "model": model,
                "input_tokens": usage.input_tokens,
                "output_tokens": usage.output_tokens,
                "usd_per_million_input": price.input_per_million,
                "usd_per_million_output": price.output_per_million,
                "price_source": price.source,
                "usd": round(usd, 6),
            }
        )
    return {
        "currency": "USD",
        "region": prices.region,
        "usd": round(total_usd, 6),
        "models": models,
    }
