"""Reports: every read-only query behind ``qocr status``, ``results`` and ``show``.

The pipeline's writes live in :mod:`models.store`; this module only reads, into the
records of :mod:`models.report_records`. A batch's summary (counts, usage, finish reasons,
error codes) comes from its tallies (:mod:`models.tallies`), so a million-item batch is
summarized from a few rows. Exports page through a batch by item id (keyset), each page a
short transaction: no cursor or snapshot is held while a slow consumer writes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import replace
from datetime import datetime
from typing import Any

from sqlalchemy import Select, func, select

from qocr.models.db import EngineBound
from qocr.models.entities import Attempt, Batch, Item, Result
from qocr.models.report_records import (
    FINISHED_STATES,
    AttemptInfo,
    BatchInfo,
    BatchLine,
    BatchSummary,
    ItemDetail,
    ItemRow,
    Recent,
    ResultInfo,
    Usage,
)
from qocr.models.states import BatchState, ItemState
from qocr.models.tallies import TallyKind, item_counts, read_tallies

PAGE_SIZE = 1_000
ERROR_STATES = (ItemState.FAILED, ItemState.CANCELLED)
_USAGE_FIELDS = {
    TallyKind.INPUT_TOKENS: "input_tokens",
    TallyKind.OUTPUT_TOKENS: "output_tokens",
    TallyKind.IMAGE_TOKENS: "image_tokens",
    TallyKind.TOTAL_TOKENS: "total_tokens",
}
# What the batch's cached results did not pay again (their originals' billed tokens).
_SAVED_FIELDS = {
    TallyKind.SAVED_INPUT_TOKENS: "input_tokens",
    TallyKind.SAVED_OUTPUT_TOKENS: "output_tokens",
}


_BATCH_COLUMNS = (
    Batch.id,
    Batch.name,
    Batch.state,
    Batch.stop_reason,
    Batch.api,
    Batch.model,
    Batch.task,
    Batch.result_schema,
    Batch.total_items,
    Batch.created_at,
    Batch.updated_at,
    Batch.finished_at,
    Batch.idempotency_key,
    Batch.notify_url,
    Batch.mode,
)

_ITEM_COLUMNS = (
    Item.id,
    Item.batch_id,
    Item.source,
    Item.state,
    Item.attempts,
    Item.last_error_code,
    Item.last_error_message,
    Item.created_at,
    Item.finished_at,
    Item.parent_item_id,
    Item.page,
)

_RESULT_COLUMNS = (
    Result.item_id.label("result_item_id"),
    Result.text,
    Result.kv_result,
    Result.words_info,
    Result.parsed,
    Result.finish_reason,
    Result.request_id,
    Result.model,
    Result.input_tokens,
    Result.output_tokens,
    Result.image_tokens,
    Result.total_tokens,
    Result.latency_ms,
    Result.created_at.label("result_created_at"),
    Result.cached_from,
)


def _page_query(
    batch_id: int,
    state: ItemState | None,
    after: int,
    size: int,
    item_columns: tuple[Any, ...],
    result_columns: tuple[Any, ...],
) -> Select[Any]:
    """One keyset page: the next ``size`` items after id ``after``, with their results.

    The page of items is a LIMITed subquery, so the planner knows only ``size`` rows reach
    the join and looks each result up by key; joining first and limiting after let
    PostgreSQL merge-join from the first result of the table.
    """
    items = select(*item_columns).where(Item.batch_id == batch_id, Item.id > after)
    if state is not None:
        items = items.where(Item.state == state)
    page = items.order_by(Item.id).limit(size).subquery("page")
    return (
        select(page, *result_columns)
        .outerjoin(Result, Result.item_id == page.c.id)
        .order_by(page.c.id)
    )


class Reports(EngineBound):
    """The read-only queries of the reporting commands; one short session per call."""

    # -- batches -----------------------------------------------------------------------

    def batch(self, batch_id: int) -> BatchInfo | None:
        with self.sessions() as session:
            row = session.execute(select(*_BATCH_COLUMNS).where(Batch.id == batch_id)).first()
            return None if row is None else _batch_info(row)

    def recent_batches(self, limit: int, state: BatchState | None = None) -> list[BatchLine]:
        """The newest batches first, each with its item counts by state."""
        query = select(*_BATCH_COLUMNS).order_by(Batch.id.desc()).limit(limit)
        if state is not None:
            query = query.where(Batch.state == state)
        with self.snapshot() as session:
            batches = [_batch_info(row) for row in session.execute(query)]
            counts = item_counts(session, [b.id for b in batches])
        return [BatchLine(batch=b, counts=counts[b.id]) for b in batches]

    def counts(self, batch_id: int) -> dict[ItemState, int]:
        """Items by state, from the batch's tallies (a few rows whatever its size)."""
        with self.snapshot() as session:
            return item_counts(session, [batch_id])[batch_id]

    def summary(self, batch_id: int) -> BatchSummary | None:
        """Counts, token usage, finish reasons and error codes of one batch, in one snapshot.

        Everything comes from the batch's tallies, which every terminal transition keeps
        in its own transaction: the cost does not grow with the batch.
        """
        with self.snapshot() as session:
            row = session.execute(select(*_BATCH_COLUMNS).where(Batch.id == batch_id)).first()
            if row is None:
                return None
            info = _batch_info(row)
            counts = item_counts(session, [batch_id])[batch_id]
            totals = read_tallies(session, [batch_id])[batch_id]
        by_model: dict[str, Usage] = {}
        saved: dict[str, Usage] = {}
        reasons: dict[str | None, int] = {}
        errors: dict[str | None, int] = {}
        for (kind, key), value in totals.items():
            if kind in _SAVED_FIELDS:
                model = key or info.model
                usage = saved.get(model, Usage())
                field = _SAVED_FIELDS[kind]
                saved[model] = replace(usage, **{field: getattr(usage, field) + value})
            elif kind == TallyKind.FINISH:
                reasons[key or None] = value
            elif kind == TallyKind.ERROR:
                errors[key or None] = value
            elif kind in _USAGE_FIELDS:
                model = key or info.model
                usage = by_model.get(model, Usage())
                by_model[model] = replace(
                    usage, **{_USAGE_FIELDS[kind]: getattr(usage, _USAGE_FIELDS[kind]) + value}
                )
        return BatchSummary(
            batch=info,
            counts=counts,
            usage=sum(by_model.values(), Usage()),
            usage_by_model=by_model,
            finish_reasons=reasons,
            errors=errors,
            cached=totals.get((TallyKind.CACHED, ""), 0),
            saved_by_model=saved,
            page_items=totals.get((TallyKind.PAGES, ""), 0),
        )

    def finished_since(self, batch_id: int, since: datetime) -> Recent:
        """How many of the batch's items reached a terminal state after ``since``."""
        with self.sessions() as session:
            count = session.scalar(
                select(func.count())
                .select_from(Item)
                .where(
                    Item.batch_id == batch_id,
                    Item.state.in_(FINISHED_STATES),
                    Item.finished_at >= since,
                )
            )
            return Recent(since=since, finished=int(count or 0))

    def requeueable(self, batch_id: int, codes: Sequence[str] | None = None) -> int:
        """Failed and cancelled items ``qocr retry`` would put back, by the same filter."""
        query = (
            select(func.count())
            .select_from(Item)
            .where(Item.batch_id == batch_id, Item.state.in_(ERROR_STATES))
        )
        if codes:
            query = query.where(Item.last_error_code.in_(list(codes)))
        with self.sessions() as session:
            return int(session.scalar(query) or 0)

    # -- items -------------------------------------------------------------------------

    def item(self, item_id: int) -> ItemDetail | None:
        """One item with its result and its attempts, oldest first."""
        with self.sessions() as session:
            row = session.execute(
                select(
                    *_ITEM_COLUMNS,
                    *_RESULT_COLUMNS,
                    Item.not_before,
                    Batch.name.label("batch_name"),
                )
                .join(Batch, Batch.id == Item.batch_id)
                .outerjoin(Result, Result.item_id == Item.id)
                .where(Item.id == item_id)
            ).first()
            if row is None:
                return None
            attempts = session.scalars(
                select(Attempt).where(Attempt.item_id == item_id).order_by(Attempt.number)
            ).all()
            history = [
                AttemptInfo(
                    number=a.number,
                    outcome=a.outcome,
                    started_at=a.started_at,
                    ended_at=a.ended_at,
                    http_status=a.http_status,
                    error_code=a.error_code,
                    error_message=a.error_message,
                    request_id=a.request_id,
                    retry_after=a.retry_after,
                    worker=a.worker,
                )
                for a in attempts
            ]
        return ItemDetail(
            item=_item_row(row),
            not_before=row.not_before,
            batch_name=row.batch_name,
            history=history,
        )

    def iter_items(
        self, batch_id: int, state: ItemState | None = None, page_size: int = PAGE_SIZE
    ) -> Iterator[ItemRow]:
        """Every item of the batch with its result, by item id, one page per transaction."""
        after = 0
        while True:
            query = _page_query(batch_id, state, after, page_size, _ITEM_COLUMNS, _RESULT_COLUMNS)
            with self.sessions() as session:
                page = [_item_row(row) for row in session.execute(query)]
            yield from page
            if len(page) < page_size:
                return
            after = page[-1].id

    def iter_kv_results(
        self, batch_id: int, state: ItemState | None = None, page_size: int = PAGE_SIZE
    ) -> Iterator[Any]:
        """The ``kv_result`` of every result of the batch (a first pass for CSV columns)."""
        after = 0
        columns = (Result.item_id.label("result_item_id"), Result.kv_result)
        while True:
            query = _page_query(batch_id, state, after, page_size, (Item.id,), columns)
            with self.sessions() as session:
                page = session.execute(query).all()
            for row in page:
                if row.result_item_id is not None:
                    yield row.kv_result
            if len(page) < page_size:
                return
            after = page[-1].id


def _batch_info(row: Any) -> BatchInfo:
    return BatchInfo(
        id=row.id,
        name=row.name,
        state=BatchState(row.state),
        stop_reason=row.stop_reason,
        api=row.api,
        model=row.model,
        task=row.task,
        result_schema=row.result_schema,
        total=int(row.total_items),
        created_at=row.created_at,
        updated_at=row.updated_at,
        finished_at=row.finished_at,
        idempotency_key=row.idempotency_key,
        notify_url=row.notify_url,
        mode=row.mode,
    )


def _item_row(row: Any) -> ItemRow:
    result = None
    if row.result_item_id is not None:
        result = ResultInfo(
            text=row.text,
            kv_result=row.kv_result,
            words_info=row.words_info,
            parsed=row.parsed,
            finish_reason=row.finish_reason,
            request_id=row.request_id,
            model=row.model,
            usage=Usage(
                int(row.input_tokens or 0),
                int(row.output_tokens or 0),
                int(row.image_tokens or 0),
                int(row.total_tokens or 0),
            ),
            latency_ms=row.latency_ms,
            created_at=row.result_created_at,
            cached_from=row.cached_from,
        )
    return ItemRow(
        id=row.id,
        batch_id=row.batch_id,
        source=row.source,
        state=ItemState(row.state),
        attempts=int(row.attempts),
        error_code=row.last_error_code,
        error_message=row.last_error_message,
        created_at=row.created_at,
        finished_at=row.finished_at,
        result=result,
        document_id=row.parent_item_id,
        page=row.page,
    )
