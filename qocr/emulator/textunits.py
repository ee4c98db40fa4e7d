"""The emulator's text-token rule: how many tokens a text costs, and where it is cut.

The real tokenizer is not published; this rule is simple, deterministic and close enough in
magnitude for budgets and truncation tests. A token is, in order of preference:

* an optional single space followed by 1-4 ASCII letters or digits (``" invo"``, ``"ice"``),
* a run of whitespace,
* any other single character (punctuation, CJK, emoji...).

Joining the tokens of a text gives the text back exactly, so cutting after ``n`` tokens and
streaming token groups are both lossless.
"""

from __future__ import annotations

import re

_TOKEN = re.compile(r" ?[A-Za-z0-9]{1,4}|\s+|.", re.S)


def split_tokens(text: str) -> list[str]:
    """``text`` as a list of tokens whose concatenation is ``text``."""
    return _TOKEN.findall(text)


def count_tokens(text: str) -> int:
    """How many tokens ``text`` costs under the emulator's rule."""
    return sum(1 for _ in _TOKEN.finditer(text))


def truncate(text: str, max_tokens: int) -> tuple[str, bool]:
    """The first ``max_tokens`` tokens of ``text``, and whether anything was cut."""
    tokens = split_tokens(text)
    if len(tokens) <= max_tokens:
        return text, False
    return "".join(tokens[:max_tokens]), True


def cut_at_stop(text: str, stops: tuple[str, ...]) -> tuple[str, bool]:
    """``text`` up to (not including) the earliest stop sequence, and whether one was found."""
    positions = [text.find(stop) for stop in stops if stop]
    found = [p for p in positions if p >= 0]
    if not found:
        return text, False
    return text[: min(found)], True


def chunk_tokens(text: str, per_chunk: int) -> list[str]:
    """``text`` in pieces of ``per_chunk`` tokens (the last may be shorter); [] for ''."""
    tokens = split_tokens(text)
    return ["".join(tokens[i : i + per_chunk]) for i in range(0, len(tokens), per_chunk)]
