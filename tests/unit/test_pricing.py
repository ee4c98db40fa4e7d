"""Prices: the catalog by default, a prices file or options over it, and the cost arithmetic."""

from __future__ import annotations

from pathlib import Path

import pytest

from qocr.errors import ConfigError
from qocr.pricing import Price, PriceTable, load_price_file, parse_prices, price_table
from qocr.qwen.catalog import PRICES


@pytest.mark.parametrize(
    ("price", "tokens_in", "tokens_out", "usd"),
    [
        (Price(0.07, 0.16, "catalog"), 1_000_000, 0, 0.07),
        (Price(0.07, 0.16, "catalog"), 0, 1_000_000, 0.16),
        (Price(0.07, 0.16, "catalog"), 732, 33, (732 * 0.07 + 33 * 0.16) / 1e6),
        (Price(2.0, 10.0, "option"), 500_000, 250_000, 1.0 + 2.5),
        (Price(1.0, 1.0, "x"), 0, 0, 0.0),
    ],
)
def test_cost_is_tokens_times_price_per_million(
    price: Price, tokens_in: int, tokens_out: int, usd: float
) -> None:
    assert price.cost(tokens_in, tokens_out) == pytest.approx(usd)


def test_the_catalog_prices_known_models_per_region() -> None:
    for region, models in PRICES.items():
        table = price_table(region)
        for model, (price_in, price_out) in models.items():
            assert table.price(model) == Price(price_in, price_out, "catalog")


def test_an_unknown_model_gets_the_regions_highest_price() -> None:
    price = price_table("cn").price("qwen-vl-ocr-next")
    assert (price.input_per_million, price.output_per_million) == (
        max(p[0] for p in PRICES["cn"].values()),
        max(p[1] for p in PRICES["cn"].values()),
    )


@pytest.mark.parametrize(
    ("overrides", "price_in", "price_out", "model", "expected"),
    [
        # A file entry for the model wins over the catalog.
        ({"m": (1.0, 2.0)}, None, None, "m", Price(1.0, 2.0, "f.toml")),
        # "*" covers the models the file does not name.
        ({"*": (3.0, 4.0)}, None, None, "other", Price(3.0, 4.0, "f.toml")),
        ({"m": (1.0, 2.0), "*": (3.0, 4.0)}, None, None, "m", Price(1.0, 2.0, "f.toml")),
        # Options win over everything, each on its own side.
        ({"m": (1.0, 2.0)}, 9.0, 8.0, "m", Price(9.0, 8.0, "option")),
        ({"m": (1.0, 2.0)}, 9.0, None, "m", Price(9.0, 2.0, "option")),
        ({}, None, 0.0, "qwen-vl-ocr", Price(PRICES["intl"]["qwen-vl-ocr"][0], 0.0, "option")),
        # A model the file does not name (and no "*"): the catalog.
        ({"m": (1.0, 2.0)}, None, None, "qwen-vl-ocr", Price(0.07, 0.16, "catalog")),
    ],
)
def test_overrides_come_before_the_catalog(
    overrides: dict[str, tuple[float, float]],
    price_in: float | None,
    price_out: float | None,
    model: str,
    expected: Price,
) -> None:
    table = PriceTable("intl", overrides, "f.toml", price_in, price_out)
    assert table.price(model) == expected


def test_a_toml_file_gives_the_entries_of_the_region(tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(
        "[prices.intl]\n"
        '"qwen-vl-ocr-latest" = { input = 0.5, output = 1 }\n'
        "[prices.cn]\n"
        '"*" = { input = 2, output = 3 }\n'
        "[schedules]\n"  # other tables of the config file are not ours
        'nightly = "x"\n'
    )
    assert load_price_file(path, "intl") == {"qwen-vl-ocr-latest": (0.5, 1.0)}
    assert load_price_file(path, "cn") == {"*": (2.0, 3.0)}
    assert load_price_file(path, "us") == {}


def test_a_json_file_holds_the_same_object(tmp_path: Path) -> None:
    path = tmp_path / "prices.json"
    path.write_text('{"prices": {"us": {"m": {"input": 0.1, "output": 0.2}}}}')
    assert load_price_file(path, "us") == {"m": (0.1, 0.2)}


def test_the_explicit_file_wins_over_the_config_file(tmp_path: Path) -> None:
    explicit = tmp_path / "a.toml"
    explicit.write_text('[prices.intl]\n"m" = { input = 1, output = 1 }\n')
    config = tmp_path / "qocr.toml"
    config.write_text('[prices.intl]\n"m" = { input = 5, output = 5 }\n')
    assert price_table("intl", explicit, config).price("m").source == str(explicit)
    assert price_table("intl", None, config).price("m") == Price(5.0, 5.0, str(config))
    # A config file that does not exist is simply not there; an explicit one must exist.
    assert price_table("intl", None, tmp_path / "none.toml").price("m").source == "catalog"
    with pytest.raises(ConfigError, match=r"none\.toml not found"):
        price_table("intl", tmp_path / "none.toml")


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("[prices\n", "prices.toml: "),
        ("prices = 3\n", r"\[prices\] must be a table of regions"),
        ("[prices.eu]\n", r"unknown region\(s\) eu"),
        ("[prices]\nintl = 1\n", r"\[prices.intl\] must be a table of models"),
        ('[prices.intl]\n"m" = 1\n', r"prices.intl.m: expected \{ input = USD"),
        ('[prices.intl]\n"m" = { input = 1 }\n', "prices.intl.m: expected"),
        ('[prices.intl]\n"m" = { input = 1, output = 2, x = 3 }\n', "prices.intl.m: expected"),
        ('[prices.intl]\n"m" = { input = -1, output = 2 }\n', "non-negative numbers"),
        ('[prices.intl]\n"m" = { input = "1", output = 2 }\n', "non-negative numbers"),
        ('[prices.intl]\n"m" = { input = true, output = 2 }\n', "non-negative numbers"),
    ],
)
def test_bad_files_are_clear_errors(tmp_path: Path, content: str, message: str) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(content)
    with pytest.raises(ConfigError, match=message):
        load_price_file(path, "intl")


def test_parse_prices_names_where_the_table_came_from() -> None:
    with pytest.raises(ConfigError, match=r"^qocr.toml: unknown region"):
        parse_prices({"moon": {}}, "intl", "qocr.toml")
