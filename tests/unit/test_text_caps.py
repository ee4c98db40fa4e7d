"""Length caps on strings bound for the store: cut with a marker, never longer than asked."""

from __future__ import annotations

import pytest

from qocr.models.text_caps import CODE_MAX_CHARS, MESSAGE_MAX_CHARS, cap


@pytest.mark.parametrize(
    ("value", "max_chars", "expected"),
    [
        (None, 10, None),
        ("", 10, ""),
        ("short", 10, "short"),
        ("x" * 10, 10, "x" * 10),
        ("abcdefghij" * 5, 30, "abcdefghij" + "…[cut from 50 chars]"),
        ("y" * 100, 5, "…[cut"),
    ],
)
def test_cap_keeps_short_values_and_cuts_long_ones_with_a_marker(
    value: str | None, max_chars: int, expected: str | None
) -> None:
    assert cap(value, max_chars) == expected


@pytest.mark.parametrize("extra_chars", [1, 10_000, 1_000_000])
@pytest.mark.parametrize("max_chars", [CODE_MAX_CHARS, MESSAGE_MAX_CHARS])
def test_a_cut_value_is_exactly_the_cap_and_cutting_it_again_changes_nothing(
    extra_chars: int, max_chars: int
) -> None:
    value = "é" * (max_chars + extra_chars)
    once = cap(value, max_chars)
    assert len(once) == max_chars
    assert once.startswith("é" * (max_chars // 2))
    assert once.endswith(f"…[cut from {len(value)} chars]")
    assert cap(once, max_chars) == once
