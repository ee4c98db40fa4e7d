"""Results by document: each source submitted, with its pages, as one record.

A source submitted is a document: an image is a document of one page (itself), a PDF or
TIFF is expanded by a worker into page items (``parent_item_id``, ``page``). Documents are
read in id order, a keyset page at a time, and each expanded one's pages by (document,
page), so an export holds one page of rows and one document's pages in memory, whatever
the batch's size. The pages' answers are merged by :mod:`models.page_merge`.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Select, select, tuple_

from qocr.models.db import EngineBound
from qocr.models.documents import iso
from qocr.models.entities import Item, Result
from qocr.models.page_merge import MergedDocument, PageResult, merge_pages
from qocr.models.report_records import ItemRow, Usage
from qocr.models.reports import _ITEM_COLUMNS, _RESULT_COLUMNS, _item_row
from qocr.models.states import ItemState
from qocr.pricing import PriceTable
from qocr.redact import redact_text

PAGE_SIZE = 1_000


@dataclass(frozen=True)
class DocumentRows:
    """A document's own item and the items of its pages, in page order (an item that was
    not expanded is its own page 1)."""

    document: ItemRow
    pages: list[ItemRow]


class DocumentReports(EngineBound):
    """The read-only queries of results by document; one short session per page of rows."""

    def iter_documents(self, batch_id: int, page_size: int = PAGE_SIZE) -> Iterator[DocumentRows]:
        """Every document of the batch with its pages, by document id."""
        after = 0
        while True:
            with self.sessions() as session:
                documents = [
                    _item_row(row)
                    for row in session.execute(_documents(batch_id, after, page_size))
                ]
            expanded = [row.id for row in documents if row.state is ItemState.EXPANDED]
            pages = self._pages_of(expanded, page_size)
            waiting = next(pages, None)
            for document in documents:
                if document.state is not ItemState.EXPANDED:
                    yield DocumentRows(document, [document])
                    continue
                rows = []
                while waiting is not None and waiting.document_id == document.id:
                    rows.append(waiting)
                    waiting = next(pages, None)
                yield DocumentRows(document, rows)
            if len(documents) < page_size:
                return
            after = documents[-1].id

    def pages_of(self, document_id: int) -> list[ItemRow]:
        """The page items of one document, in page order (none for an image)."""
        return list(self._pages_of([document_id], PAGE_SIZE))

    def _pages_of(self, document_ids: Sequence[int], page_size: int) -> Iterator[ItemRow]:
        """The pages of these documents by (document, page), a keyset page at a time."""
        if not document_ids:
            return
        after = (0, 0)
        while True:
            with self.sessions() as session:
                rows = [
                    _item_row(row)
                    for row in session.execute(_pages(document_ids, after, page_size))
                ]
            yield from rows
            if len(rows) < page_size:
                return
            last = rows[-1]
            after = (last.document_id or 0, last.page or 0)


def _documents(batch_id: int, after: int, size: int) -> Select[Any]:
    items = (
        select(*_ITEM_COLUMNS)
        .where(Item.batch_id == batch_id, Item.parent_item_id.is_(None), Item.id > after)
        .order_by(Item.id)
        .limit(size)
        .subquery("documents")
    )
    return (
        select(items, *_RESULT_COLUMNS)
        .outerjoin(Result, Result.item_id == items.c.id)
        .order_by(items.c.id)
    )


def _pages(document_ids: Sequence[int], after: tuple[int, int], size: int) -> Select[Any]:
    items = (
        select(*_ITEM_COLUMNS)
        .where(
            Item.parent_item_id.in_(list(document_ids)),
            tuple_(Item.parent_item_id, Item.page) > tuple_(*after),
        )
        .order_by(Item.parent_item_id, Item.page)
        .limit(size)
        .subquery("pages")
    )
    return (
        select(items, *_RESULT_COLUMNS)
        .outerjoin(Result, Result.item_id == items.c.id)
        .order_by(items.c.parent_item_id, items.c.page)
    )


def page_result(row: ItemRow) -> PageResult:
    """What the merge needs of one page's row (an unexpanded item is page 1)."""
    result = row.result
    return PageResult(
        page=row.page or 1,
        item_id=row.id,
        state=row.state,
        text=result.text if result else None,
        kv_result=result.kv_result if result else None,
        finish_reason=result.finish_reason if result else None,
        model=result.model if result else None,
        usage=result.usage if result else Usage(),
        error_code=row.error_code,
        error_message=row.error_message,
    )


def merge_document(rows: DocumentRows) -> MergedDocument:
    return merge_pages(page_result(row) for row in rows.pages)


def cost_usd(merged: MergedDocument, prices: PriceTable, default_model: str) -> float:
    """The document's estimated cost: each model's tokens at its price."""
    usd = 0.0
    for model, usage in merged.usage_by_model.items():
        usd += prices.price(model or default_model).cost(usage.input_tokens, usage.output_tokens)
    return round(usd, 6)


def document_json(
    rows: DocumentRows,
    merged: MergedDocument,
    cost: float,
    secret: str | None,
) -> dict[str, Any]:
    """One document as a ``qocr results --by document`` JSON line (docs/cli-json.md)."""
    document = rows.document

    def shown(message: str | None) -> str | None:
        return redact_text(message, secret) if message else None

    usage = merged.usage
    return {
        "document_id": document.id,
        "batch_id": document.batch_id,
        "source": document.source,
        "state": merged.state.value,
        "page_count": len(merged.pages),
        "pages": [
            {
                "page": page.page,
                "item_id": page.item_id,
                "state": page.state.value,
                "finish_reason": page.finish_reason,
                "error_code": page.error_code,
                "error_message": shown(page.error_message),
            }
            for page in merged.pages
        ],
        "failed_pages": list(merged.failed_pages),
        "error_code": merged.error_code,
        "error_message": shown(merged.error_message),
        "text": merged.text,
        "kv_result": merged.kv_result,
        "conflicts": list(merged.conflicts),
        "finish_reason": merged.finish_reason,
        "usage": {
            "input_tokens": usage.input_tokens,
            "output_tokens": usage.output_tokens,
            "image_tokens": usage.image_tokens,
            "total_tokens": usage.total_tokens,
        },
        "cost_usd": cost,
        "created_at": iso(document.created_at),
        "finished_at": iso(_finished_at(rows)),
    }


def _finished_at(rows: DocumentRows) -> Any:
    """When the document's last page ended (None while one is still open)."""
    moments = [row.finished_at for row in rows.pages]
    if not moments or any(moment is None for moment in moments):
        return None
    return max(moment for moment in moments if moment is not None)
