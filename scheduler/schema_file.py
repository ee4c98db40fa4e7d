"""The key-extraction schema a user gives (``--schema FILE``, a schedule's ``schema``), checked.

The schema travels, and is billed, with every image of the batch, so its size is bounded.
A file is read as UTF-8 with or without a BOM; nesting too deep for the JSON parser, binary
bytes and oversized files become a :class:`SchemaError` of one line instead of a traceback.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from qocr.errors import QocrError

SCHEMA_MAX_BYTES = 64 * 1024
# The model takes 3 levels (RecognizeOptions says so); this bound only keeps anything deeper
# from reaching code that walks the schema recursively.
SCHEMA_MAX_NESTING = 32


class SchemaError(QocrError):
    """The schema file cannot be read, or is not a small JSON object; says why, not where."""

    code = "schema_invalid"


def read_schema_file(path: Path) -> dict[str, Any]:
    """The JSON object in ``path``; reads at most :data:`SCHEMA_MAX_BYTES` + 1 bytes."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(SCHEMA_MAX_BYTES + 1)
    except OSError as exc:
        raise SchemaError(exc.strerror or type(exc).__name__, code="schema_unreadable") from None
    if len(raw) > SCHEMA_MAX_BYTES:
        raise SchemaError(_too_large("the file is "), code="schema_too_large")
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise SchemaError("not UTF-8 text (is it a JSON file?)") from None
    try:
        schema = json.loads(text)
    except json.JSONDecodeError as exc:
        raise SchemaError(f"invalid JSON at line {exc.lineno}: {exc.msg}") from None
    except RecursionError:
        raise SchemaError(_too_deep()) from None
    return check_schema(schema)


def check_schema(schema: Any) -> dict[str, Any]:
    """``schema`` if it is a non-empty JSON object of bounded nesting and size."""
    if not isinstance(schema, dict) or not schema:
        raise SchemaError("must be a non-empty JSON object")
    if _nesting(schema) > SCHEMA_MAX_NESTING:
        raise SchemaError(_too_deep())
    size = len(json.dumps(schema, ensure_ascii=False, separators=(",", ":")).encode())
    if size > SCHEMA_MAX_BYTES:
        raise SchemaError(_too_large(f"{size} bytes as JSON, "), code="schema_too_large")
    return schema


def _nesting(value: Any) -> int:
    """How deep objects and arrays nest, without recursion (the input may be hostile)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children = list(node.values())
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, depth)
        if depth <= SCHEMA_MAX_NESTING:  # one level past the limit is enough to know
            stack.extend((child, depth + 1) for child in children)
    return deepest


def _too_large(prefix: str) -> str:
    return (
        f"{prefix}over the {SCHEMA_MAX_BYTES}-byte limit (the schema is sent, and billed, "
        "with every image)"
    )


def _too_deep() -> str:
    return f"nested too deeply (more than {SCHEMA_MAX_NESTING} levels)"
