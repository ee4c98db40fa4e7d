"""CSV cells that a spreadsheet would run as formulas get a leading quote (CSV injection)."""

from __future__ import annotations

from typing import Any

import pytest

from qocr.cli.csv_export import cell, defuse, header_of


@pytest.mark.parametrize(
    ("text", "written"),
    [
        ('=HYPERLINK("http://x","y")', '\'=HYPERLINK("http://x","y")'),
        ("+1 555 0100", "'+1 555 0100"),
        ("-2+3+cmd|' /C calc'!A0", "'-2+3+cmd|' /C calc'!A0"),
        ("@SUM(A1:A2)", "'@SUM(A1:A2)"),
        ("\t=1+1", "'\t=1+1"),
        ("\r=1+1", "'\r=1+1"),
        ("-", "'-"),
        # Plain numbers are read as numbers, never run: kept as they are.
        ("-12.50", "-12.50"),
        ("+42", "+42"),
        ("-1e3", "-1e3"),
        ("-.5", "-.5"),
        # Anything else, including a formula sign further in, is left alone.
        ("Total = 12", "Total = 12"),
        ("invoice 2026-11", "invoice 2026-11"),
        (" =1+1", " =1+1"),
        ("", ""),
    ],
)
def test_defuse(text: str, written: str) -> None:
    assert defuse(text) == written


@pytest.mark.parametrize(
    ("value", "escaped", "raw"),
    [
        ("=1+1", "'=1+1", "=1+1"),
        (-5, "-5", "-5"),
        (-1.5, "-1.5", "-1.5"),
        (True, "true", "true"),
        (None, "", ""),
        (["=1+1"], '["=1+1"]', '["=1+1"]'),
        ({"a": "@x"}, '{"a": "@x"}', '{"a": "@x"}'),
    ],
)
def test_only_text_cells_are_escaped_and_raw_keeps_them(value: Any, escaped: str, raw: str) -> None:
    assert cell(value) == escaped
    assert cell(value, escape=False) == raw


def test_result_columns_named_like_formulas_are_escaped_in_the_header() -> None:
    header = header_of(["=cmd", "total"])

    assert [cell(name) for name in header][-3:] == ["'=cmd", "total", "text"]
