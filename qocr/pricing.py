"""What a batch's tokens cost: the catalog's prices, overridable per region and model.

Prices are USD per million tokens, (input, output). Image tokens are billed as input tokens:
they are part of ``input_tokens``, so they are not added again. Where a price comes from,
first match wins:

1. ``--price-in`` / ``--price-out`` on the command line (every model);
2. a prices file (``--prices FILE``, else the ``[prices]`` table of the qocr config file,
   ``QOCR_CONFIG``, default ``qocr.toml``, when it exists)::

       [prices.intl]
       "qwen-vl-ocr-latest" = { input = 0.07, output = 0.16 }
       "*" = { input = 0.10, output = 0.20 }   # any other model in this region

   JSON files (``.json``) hold the same object: ``{"prices": {"intl": {...}}}``;
3. the catalog (:data:`qocr.qwen.catalog.PRICES`, Jan 2026), which prices an unknown model at
   the region's highest rate so a budget is never under-estimated.
"""

from __future__ import annotations

import json
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from qocr.errors import ConfigError
from qocr.qwen.batch_limits import BATCH_PRICE_RATE
from qocr.qwen.catalog import REGIONS, Region, price

TOKENS_PER_UNIT = 1_000_000
ANY_MODEL = "*"


@dataclass(frozen=True)
class Price:
    """USD per million input and output tokens, and where that figure came from."""

    input_per_million: float
    output_per_million: float
    source: str  # "catalog", "option", or the prices file's path

    def cost(self, input_tokens: int, output_tokens: int) -> float:
        """USD for these tokens (image tokens are inside ``input_tokens``)."""
        return (
            input_tokens * self.input_per_million + output_tokens * self.output_per_million
        ) / TOKENS_PER_UNIT


@dataclass(frozen=True)
class PriceTable:
    """Prices for one region: overrides first, then the catalog."""

    region: Region
    overrides: Mapping[str, tuple[float, float]]
    overrides_source: str = "catalog"
    price_in: float | None = None
    price_out: float | None = None
    # A share of the prices above: the Batch API bills BATCH_PRICE_RATE of realtime.
    rate: float = 1.0

    def price(self, model: str) -> Price:
        base = self.overrides.get(model) or self.overrides.get(ANY_MODEL)
        source = self.overrides_source
        if base is None:
            base, source = price(model, self.region), "catalog"
        if self.price_in is not None or self.price_out is not None:
            base = (
                base[0] if self.price_in is None else self.price_in,
                base[1] if self.price_out is None else self.price_out,
            )
            source = "option"
        if self.rate == 1.0:
            return Price(base[0], base[1], source)
        return Price(
            base[0] * self.rate, base[1] * self.rate, f"{source} × {self.rate:g} batch rate"
        )

    def for_mode(self, mode: str) -> PriceTable:
        """This table for a batch of ``mode``: batch mode pays the Batch API's rate."""
        return replace(self, rate=BATCH_PRICE_RATE) if mode == "batch" else self


def load_price_file(
    path: Path, region: Region, required: bool = True
) -> dict[str, tuple[float, float]]:
    """The ``[prices.REGION]`` table of a TOML or JSON file; empty if it has none.

    A missing file is an error when ``required`` (an explicit ``--prices``), else empty.
    """
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        if required:
            raise ConfigError(f"prices file {path} not found") from None
        return {}
    except OSError as exc:
        raise ConfigError(f"prices file {path}: {exc.strerror}") from None
    try:
        document = json.loads(raw) if path.suffix == ".json" else tomllib.loads(raw.decode())
    except (ValueError, UnicodeDecodeError) as exc:
        raise ConfigError(f"prices file {path}: {exc}") from None
    if not isinstance(document, dict):
        raise ConfigError(f"prices file {path}: expected a table at the top level")
    return parse_prices(document.get("prices", {}), region, str(path))


def parse_prices(table: Any, region: Region, where: str) -> dict[str, tuple[float, float]]:
    """Validate a ``prices`` table and return the entries of ``region``."""
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: [prices] must be a table of regions")
    unknown = sorted(set(table) - set(REGIONS))
    if unknown:
        raise ConfigError(
            f"{where}: unknown region(s) {', '.join(unknown)} in [prices] "
            f"(known: {', '.join(REGIONS)})"
        )
    entries = table.get(region, {})
    if not isinstance(entries, dict):
        raise ConfigError(f"{where}: [prices.{region}] must be a table of models")
    return {
        model: _pair(entry, f"{where}: prices.{region}.{model}") for model, entry in entries.items()
    }


def _pair(entry: Any, where: str) -> tuple[float, float]:
    if not isinstance(entry, dict) or set(entry) != {"input", "output"}:
        raise ConfigError(f"{where}: expected {{ input = USD, output = USD }} per million tokens")
    values = (entry["input"], entry["output"])
    for value in values:
        if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
            raise ConfigError(f"{where}: prices must be non-negative numbers")
    return float(values[0]), float(values[1])


def price_table(
    region: Region,
    prices_file: Path | None = None,
    config_file: Path | None = None,
    price_in: float | None = None,
    price_out: float | None = None,
) -> PriceTable:
    """The table the reporting commands use; see the module docstring for the order."""
    if prices_file is not None:
        overrides, source = load_price_file(prices_file, region), str(prices_file)
    elif config_file is not None:
        overrides = load_price_file(config_file, region, required=False)
        source = str(config_file)
    else:
        overrides, source = {}, "catalog"
    return PriceTable(region, overrides, source, price_in, price_out)
