"""A document's one answer from its pages' answers: every rule as a table."""

from __future__ import annotations

from typing import Any

import pytest

from qocr.models.page_merge import (
    PAGE_SEPARATOR,
    PageResult,
    document_state,
    merge_pages,
    merge_values,
    worst_finish,
)
from qocr.models.report_records import Usage
from qocr.models.states import ItemState

S, F, C, R, Q = (
    ItemState.SUCCEEDED,
    ItemState.FAILED,
    ItemState.CANCELLED,
    ItemState.RUNNING,
    ItemState.QUEUED,
)


@pytest.mark.parametrize(
    ("values", "merged", "conflicts"),
    [
        # First non-empty value in page order; agreeing pages give it once.
        (["INV-1", None, "INV-1"], "INV-1", []),
        ([None, "", "2026-11-30"], "2026-11-30", []),
        # The model answers the string "null" for a field it did not find on a page.
        (["null", "USD 2,980.00"], "USD 2,980.00", []),
        (["2026-04-09", "NULL "], "2026-04-09", []),
        # Pages that disagree: every distinct value, in page order, and the field named.
        (["100.00", "120.00", "100.00"], ["100.00", "120.00"], [""]),
        # Nothing on any page: the shape the pages gave ("" rather than null).
        ([None, ""], "", []),
        (["null", "null"], "null", []),
        ([None, None], None, []),
        ([], None, []),
        # Objects merge field by field; a conflict deep inside is named by its path.
        (
            [{"seller": {"name": "ACME", "vat": ""}}, {"seller": {"name": "ACME", "vat": "FR1"}}],
            {"seller": {"name": "ACME", "vat": "FR1"}},
            [],
        ),
        (
            [{"total": "10", "date": "d1"}, {"total": "12"}],
            {"total": ["10", "12"], "date": "d1"},
            ["total"],
        ),
        (
            [{"a": {"b": "x"}}, {"a": {"b": "y"}}],
            {"a": {"b": ["x", "y"]}},
            ["a.b"],
        ),
        # Lists go on from page to page (line items); the same list on every page once.
        ([[{"sku": 1}], [{"sku": 2}]], [{"sku": 1}, {"sku": 2}], []),
        ([["x"], ["x"]], ["x"], []),
        # Mixed kinds cannot merge: kept side by side.
        (["text", {"k": 1}], ["text", {"k": 1}], [""]),
        # Numbers and booleans are values like any other.
        ([0, 0], 0, []),
        ([False, True], [False, True], [""]),
    ],
)
def test_field_values_merge_in_page_order(
    values: list[Any], merged: Any, conflicts: list[str]
) -> None:
    found: list[str] = []
    assert merge_values(values, "", found) == merged
    assert found == conflicts


@pytest.mark.parametrize(
    ("reasons", "worst"),
    [
        (["stop", "length", "stop"], "length"),
        (["stop", "content_filter", "length"], "length"),
        (["stop", "content_filter"], "content_filter"),
        (["stop", "something_new"], "something_new"),
        (["stop", None], "stop"),
        ([None, None], None),
        ([], None),
    ],
)
def test_the_worst_finish_reason_wins(reasons: list[str | None], worst: str | None) -> None:
    assert worst_finish(reasons) == worst


@pytest.mark.parametrize(
    ("states", "state"),
    [
        ([S, S, S], S),
        ([S, F, S], F),
        ([S, F, R], F),
        ([S, C, S], C),
        ([S, R, Q], R),
        ([S, Q], Q),
        ([], S),
    ],
)
def test_a_document_is_failed_when_any_page_failed(
    states: list[ItemState], state: ItemState
) -> None:
    assert document_state(states) == state


def page(number: int, **fields: Any) -> PageResult:
    fields.setdefault("state", S)
    return PageResult(page=number, item_id=100 + number, **fields)


def test_pages_are_merged_in_page_order_whatever_order_they_come_in() -> None:
    pages = [
        page(3, text="three", kv_result={"total": "30"}, finish_reason="stop",
             model="m", usage=Usage(10, 2, 8, 12)),
        page(1, text="one", kv_result={"number": "INV-1", "total": None},
             finish_reason="length", model="m", usage=Usage(11, 3, 8, 14)),
        page(2, text="two", kv_result={"number": "INV-1", "total": "20"},
             finish_reason="stop", model="n", usage=Usage(12, 4, 8, 16)),
    ]  # fmt: skip
    merged = merge_pages(pages)
    assert [p.page for p in merged.pages] == [1, 2, 3]
    assert merged.text == PAGE_SEPARATOR.join(["one", "two", "three"])
    assert merged.text is not None and merged.text.split(PAGE_SEPARATOR)[1] == "two"
    assert merged.kv_result == {"number": "INV-1", "total": ["20", "30"]}
    assert merged.conflicts == ("total",)
    assert merged.finish_reason == "length"
    assert merged.usage == Usage(33, 9, 24, 42)
    assert merged.usage_by_model == {"m": Usage(21, 5, 16, 26), "n": Usage(12, 4, 8, 16)}
    assert merged.state is S
    assert merged.failed_pages == ()
    assert merged.error_code is None


def test_a_failed_page_fails_the_document_and_says_which() -> None:
    merged = merge_pages(
        [
            page(1, text="one", finish_reason="stop"),
            page(2, state=F, error_code="page_blank", error_message="page 2 is blank"),
            page(3, state=F, error_code="InternalError", error_message="boom"),
        ]
    )
    assert merged.state is F
    assert merged.failed_pages == (2, 3)
    assert (merged.error_code, merged.error_message) == ("page_blank", "page 2 is blank")
    # The failed pages keep their place in the text: page n is still the n-th part.
    assert merged.text == PAGE_SEPARATOR.join(["one", "", ""])


def test_a_document_no_page_of_which_answered_has_no_text() -> None:
    merged = merge_pages([page(1, state=Q), page(2, state=R)])
    assert merged.state is R
    assert merged.text is None and merged.kv_result is None and merged.finish_reason is None
    assert merged.usage == Usage()
