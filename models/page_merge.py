"""One answer per document from the answers of its pages: pure functions, no I/O.

- **text**: the pages' texts in page order, joined with :data:`PAGE_SEPARATOR` (a form
  feed, the page break of plain text: ``text.split("\\f")[n - 1]`` is page n's);
- **kv_result**: field by field, the first value a page gave in page order; where pages
  gave different values, every distinct value in a list, and the field's dotted path in
  ``conflicts``. Empty values (null, ``""``, ``[]``, ``{}``, and the string ``"null"``,
  which the model answers for a field it did not find) give way to any other. Nested
  objects merge field by field; lists (line items that go on over pages) are concatenated;
- **usage**: summed (and per model, for the cost);
- **finish_reason**: the worst of the pages' (``length`` first: an answer was cut);
- **state**: ``failed`` when a page failed (``failed_pages`` says which), else
  ``cancelled``, ``running``, ``queued``, and ``succeeded`` when every page did.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from qocr.models.report_records import Usage
from qocr.models.states import ItemState

PAGE_SEPARATOR = "\f"
# What a page answers for a field it does not hold (the model writes the string "null").
NOT_FOUND_TEXTS = frozenset({"", "null"})
# Worst first; any reason not listed ranks between content_filter and stop.
FINISH_SEVERITY = {"length": 4, "content_filter": 3, "stop": 1}
UNKNOWN_FINISH_SEVERITY = 2
# A document's state from its pages': the first of these any page is in.
STATE_PRECEDENCE = (
    ItemState.FAILED,
    ItemState.CANCELLED,
    ItemState.RUNNING,
    ItemState.QUEUED,
    ItemState.SUCCEEDED,
)


@dataclass(frozen=True)
class PageResult:
    """What one page (an item) came to; the result fields are None without a result."""

    page: int
    item_id: int
    state: ItemState
    text: str | None = None
    kv_result: Any = None
    finish_reason: str | None = None
    model: str | None = None
    usage: Usage = field(default_factory=Usage)
    error_code: str | None = None
    error_message: str | None = None


@dataclass(frozen=True)
class MergedDocument:
    """The document's one answer, and its pages in order."""

    state: ItemState
    pages: tuple[PageResult, ...]
    text: str | None
    kv_result: Any
    conflicts: tuple[str, ...]
    finish_reason: str | None
    usage: Usage
    usage_by_model: dict[str, Usage]
    failed_pages: tuple[int, ...]
    error_code: str | None
    error_message: str | None


def merge_pages(pages: Iterable[PageResult]) -> MergedDocument:
    """The answer of a document whose pages are ``pages`` (in any order)."""
    ordered = tuple(sorted(pages, key=lambda page: page.page))
    answered = [page for page in ordered if page.text is not None or page.kv_result is not None]
    failed = [page for page in ordered if page.state is ItemState.FAILED]
    first_error = failed[0] if failed else next((p for p in ordered if p.error_code), None)
    conflicts: list[str] = []
    kv = merge_values([page.kv_result for page in ordered], "", conflicts)
    by_model: dict[str, Usage] = {}
    for page in answered:
        key = page.model or ""
        by_model[key] = by_model.get(key, Usage()) + page.usage
    return MergedDocument(
        state=document_state(page.state for page in ordered),
        pages=ordered,
        text=PAGE_SEPARATOR.join(page.text or "" for page in ordered) if answered else None,
        kv_result=kv,
        conflicts=tuple(conflicts),
        finish_reason=worst_finish(page.finish_reason for page in answered),
        usage=sum((page.usage for page in ordered), Usage()),
        usage_by_model=by_model,
        failed_pages=tuple(page.page for page in failed),
        error_code=first_error.error_code if first_error else None,
        error_message=first_error.error_message if first_error else None,
    )


def document_state(states: Iterable[ItemState]) -> ItemState:
    """The state a document is in, from its pages' (see :data:`STATE_PRECEDENCE`)."""
    seen = set(states)
    return next((state for state in STATE_PRECEDENCE if state in seen), ItemState.SUCCEEDED)


def worst_finish(reasons: Iterable[str | None]) -> str | None:
    """The most worrying finish reason (``length`` first); None when no page has one."""
    worst: str | None = None
    for reason in reasons:
        if reason is not None and (worst is None or _severity(reason) > _severity(worst)):
            worst = reason
    return worst


def _severity(reason: str) -> int:
    return FINISH_SEVERITY.get(reason, UNKNOWN_FINISH_SEVERITY)


def is_empty(value: Any) -> bool:
    """A value that says nothing was found: null, blank, ``"null"``, an empty list or object."""
    if isinstance(value, str):
        return value.strip().lower() in NOT_FOUND_TEXTS
    return value is None or value == [] or value == {}


def merge_values(values: Sequence[Any], path: str = "", conflicts: list[str] | None = None) -> Any:
    """One value from the pages' values of one field (page order); see the module's rules.

    ``conflicts`` collects the dotted paths of fields whose pages disagreed.
    """
    present = _distinct([value for value in values if not is_empty(value)])
    if not present:
        # Nothing found on any page: keep the shape the pages answered with ("" or null).
        return next((value for value in values if value is not None), None)
    if len(present) == 1:
        return present[0]
    if all(isinstance(value, dict) for value in present):
        keys = list(dict.fromkeys(key for value in present for key in value))
        return {
            key: merge_values([value.get(key) for value in present], _join(path, key), conflicts)
            for key in keys
        }
    if all(isinstance(value, list) for value in present):
        return [element for value in present for element in value]
    if conflicts is not None:
        conflicts.append(path)
    return present


def _distinct(values: list[Any]) -> list[Any]:
    """The values, each once, in order (JSON values compared as JSON)."""
    seen: set[str] = set()
    kept = []
    for value in values:
        key = json.dumps(value, sort_keys=True, ensure_ascii=False, default=str)
        if key not in seen:
            seen.add(key)
            kept.append(value)
    return kept


def _join(path: str, key: Any) -> str:
    return f"{path}.{key}" if path else str(key)
