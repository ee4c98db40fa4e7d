"""Key information extraction over recognized lines: fill a schema, or list the labelled pairs.

A schema key is found on a line that contains it as a phrase (``invoice_number`` matches
"Invoice Number: 12345" and "INVOICE NUMBER 12345"); its value is the rest of that line, or
the next line when the label stands alone. A key found nowhere is the string ``"null"``, as
the real model answers (see the seed's sample). Nested objects are filled recursively; a list
holding one object describes repeated items and is filled once.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

NOT_FOUND = "null"
_SEPARATORS = " \t:：=-–|"
_PAIR = re.compile(r"^\s*([^:：]{1,60}?)\s*[:：]\s*(.+?)\s*$")
_PROMPT_KEY = re.compile(r"""['"]([^'"\n]{1,80})['"]\s*:""")


def _words(key: str) -> list[str]:
    return [w for w in re.split(r"[\s_\-./]+", key.lower()) if w]


def find_value(key: str, lines: list[str]) -> str:
    """The value labelled ``key`` in ``lines``, or ``"null"``."""
    words = _words(key)
    if not words:
        return NOT_FOUND
    pattern = re.compile(r"\b" + r"[\s_\-./]*".join(re.escape(w) for w in words) + r"\b", re.I)
    for index, line in enumerate(lines):
        match = pattern.search(line)
        if match is None:
            continue
        rest = line[match.end() :].strip(_SEPARATORS)
        if rest:
            return rest
        if index + 1 < len(lines) and lines[index + 1].strip():
            return lines[index + 1].strip()
    return NOT_FOUND


def fill_schema(schema: Mapping[str, Any], lines: list[str]) -> dict[str, Any]:
    """``schema``'s keys with the values found in ``lines`` (nesting kept)."""
    result: dict[str, Any] = {}
    for key, description in schema.items():
        if isinstance(description, Mapping):
            result[key] = fill_schema(description, lines)
        elif isinstance(description, list) and description and isinstance(description[0], Mapping):
            result[key] = [fill_schema(description[0], lines)]
        else:
            result[key] = find_value(str(key), lines)
    return result


def labelled_pairs(lines: list[str]) -> dict[str, str]:
    """Every ``label: value`` line as a pair; what extraction without a schema returns."""
    pairs: dict[str, str] = {}
    for line in lines:
        match = _PAIR.match(line)
        if match is not None and match.group(1) not in pairs:
            pairs[match.group(1)] = match.group(2)
    return pairs


def prompt_keys(prompt: str) -> list[str]:
    """The keys of the JSON example in a prompt (``{'invoice_number': 'xxx', ...}``)."""
    keys: list[str] = []
    for block in re.findall(r"\{[^{}]*\}", prompt, flags=re.S):
        for key in _PROMPT_KEY.findall(block):
            if key not in keys:
                keys.append(key)
    return keys


def prompt_schema(prompt: str) -> dict[str, Any] | None:
    """The schema a prompt spells out: its first JSON object (nesting kept), else the keys of
    a Python-style example (``{'invoice_number': 'xxx'}``); None when it shows none."""
    decoder = json.JSONDecoder()
    for match in re.finditer(r"\{", prompt):
        try:
            value, _ = decoder.raw_decode(prompt, match.start())
        except ValueError:
            continue
        if isinstance(value, dict) and value:
            return value
    keys = prompt_keys(prompt)
    return dict.fromkeys(keys, "") if keys else None
