"""The emulator's token rule: counting, cutting, chunking (all lossless)."""

from __future__ import annotations

import pytest

from qocr.emulator.textunits import (
    chunk_tokens,
    count_tokens,
    cut_at_stop,
    split_tokens,
    truncate,
)

TEXTS = [
    "",
    "a",
    "Invoice Number: 12345",
    '```json\n{\n    "seller_name": "null"\n}\n```',
    "发票代码 142011726001",
    "  leading and trailing  \n\n",
    "emoji 🙂 and tabs\tend",
]


@pytest.mark.parametrize("text", TEXTS)
def test_tokens_join_back_to_the_text(text: str) -> None:
    assert "".join(split_tokens(text)) == text
    assert count_tokens(text) == len(split_tokens(text))


@pytest.mark.parametrize(
    ("text", "tokens"),
    [
        ("invoice", ["invo", "ice"]),
        ("Total 99.50", ["Tota", "l", " 99", ".", "50"]),
        ("a  b", ["a", "  ", "b"]),
        ("发票", ["发", "票"]),
        ("x\n", ["x", "\n"]),
    ],
)
def test_token_boundaries(text: str, tokens: list[str]) -> None:
    assert split_tokens(text) == tokens


@pytest.mark.parametrize(
    ("text", "limit", "expected", "cut"),
    [
        ("invoice total", 2, "invoice", True),
        ("invoice total", 4, "invoice total", False),
        ("invoice total", 100, "invoice total", False),
        ("", 1, "", False),
    ],
)
def test_truncate(text: str, limit: int, expected: str, cut: bool) -> None:
    assert truncate(text, limit) == (expected, cut)


@pytest.mark.parametrize(
    ("text", "stops", "expected"),
    [
        ("alpha beta gamma", ("beta",), ("alpha ", True)),
        ("alpha beta gamma", ("gamma", "beta"), ("alpha ", True)),
        ("alpha beta", ("zeta",), ("alpha beta", False)),
        ("alpha beta", ("",), ("alpha beta", False)),
        ("alpha", (), ("alpha", False)),
    ],
)
def test_cut_at_stop(text: str, stops: tuple[str, ...], expected: tuple[str, bool]) -> None:
    assert cut_at_stop(text, stops) == expected


@pytest.mark.parametrize("per_chunk", [1, 2, 3, 7])
@pytest.mark.parametrize("text", TEXTS)
def test_chunks_cover_the_text(text: str, per_chunk: int) -> None:
    chunks = chunk_tokens(text, per_chunk)
    assert "".join(chunks) == text
    assert all(count_tokens(c) <= per_chunk for c in chunks)
    assert len(chunks) == -(-count_tokens(text) // per_chunk)
