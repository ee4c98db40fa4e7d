"""The result cache's SQL: the paid result an item may reuse, and what a reuse adds to tallies.

A result is reusable when it was paid for (not itself a copy: a copy's age would hide its
original's), answers the same image key and request fingerprint, was not cut at
``max_tokens`` (``finish_reason = 'length'``), and is recent enough for the batch. Only
succeeded items have results, so a failed call is never reused. The lookup is one probe of
the partial index ``ix_results_cache_key``, newest first.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import bindparam, or_, select

from qocr.models.db import EngineBound
from qocr.models.entities import Result
from qocr.models.records import ResultRecord
from qocr.models.tallies import TallyKind

TRUNCATED = "length"
# "Any age": earlier than every result.
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

_FIND = (
    select(
        Result.item_id,
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
        Result.created_at,
    )
    .where(
        Result.image_sha256 == bindparam("image_sha256"),
        Result.options_fingerprint == bindparam("fingerprint"),
        Result.cached_from.is_(None),
        or_(Result.finish_reason.is_(None), Result.finish_reason != TRUNCATED),
        Result.created_at >= bindparam("not_before"),
    )
    .order_by(Result.created_at.desc())
    .limit(1)
)


@dataclass(frozen=True)
class PaidResult:
    """A paid result the cache may hand out, and the item it belongs to."""

    item_id: int
    text: str
    kv_result: Any
    words_info: list[Any] | None
    parsed: Any
    finish_reason: str | None
    request_id: str | None
    model: str | None
    input_tokens: int
    output_tokens: int
    image_tokens: int
    total_tokens: int
    created_at: datetime

    def reused(self, image_sha256: str, fingerprint: str) -> ResultRecord:
        """This answer as another item's result: nothing billed, the original's counts kept."""
        return ResultRecord(
            text=self.text,
            kv_result=self.kv_result,
            words_info=self.words_info,
            parsed=self.parsed,
            finish_reason=self.finish_reason,
            request_id=self.request_id,
            model=self.model,
            image_sha256=image_sha256,
            options_fingerprint=fingerprint,
            cached_from=self.item_id,
            original_input_tokens=self.input_tokens,
            original_output_tokens=self.output_tokens,
            original_image_tokens=self.image_tokens,
            original_total_tokens=self.total_tokens,
        )


class ResultCacheQueries(EngineBound):
    """The lookup of a paid result by image key and request fingerprint."""

    def find_paid(
        self, image_sha256: str, fingerprint: str, not_before: datetime | None = None
    ) -> PaidResult | None:
        """The newest reusable result of this key created at or after ``not_before``."""
        params = {
            "image_sha256": image_sha256,
            "fingerprint": fingerprint,
            "not_before": not_before or _EPOCH,
        }
        # Ended by COMMIT, not by the pool's ROLLBACK: on PostgreSQL a ROLLBACK makes psycopg
        # drop every statement it prepared on the connection (DEALLOCATE ALL), and this read
        # runs once an item (bench/RESULTS.md, "The call floor": PostgreSQL's CPU an item -30 %).
        with self.engine.begin() as conn:
            row = conn.execute(_FIND, params).first()
        if row is None:
            return None
        return PaidResult(
            item_id=int(row.item_id),
            text=row.text,
            kv_result=row.kv_result,
            words_info=row.words_info,
            parsed=row.parsed,
            finish_reason=row.finish_reason,
            request_id=row.request_id,
            model=row.model,
            input_tokens=int(row.input_tokens or 0),
            output_tokens=int(row.output_tokens or 0),
            image_tokens=int(row.image_tokens or 0),
            total_tokens=int(row.total_tokens or 0),
            created_at=row.created_at,
        )


def reusable(finish_reason: str | None) -> bool:
    """Whether a paid result with this ``finish_reason`` may serve later copies (the
    condition :meth:`ResultCacheQueries.find_paid` looks up)."""
    return finish_reason != TRUNCATED


def reuse_tallies(result: ResultRecord) -> dict[tuple[TallyKind, str], int]:
    """What a reused result adds to its batch's tallies: one cached item and the tokens its
    original was billed, which this batch did not pay (none for a paid result)."""
    if result.cached_from is None:
        return {}
    model = result.model or ""
    return {
        (TallyKind.CACHED, ""): 1,
        (TallyKind.SAVED_INPUT_TOKENS, model): result.original_input_tokens or 0,
        (TallyKind.SAVED_OUTPUT_TOKENS, model): result.original_output_tokens or 0,
    }
