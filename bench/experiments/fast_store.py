"""The store's two hot transactions rewritten as prebuilt Core statements, to measure a proposal.

``Store.claim`` and ``Store.succeed`` run once per item. Today each builds its statements
anew through the ORM session (construction, cache-key generation, ORM bulk-update
evaluation, a unit-of-work flush for the Attempt row), and ``succeed`` issues five
statements. ``FastStore`` keeps the same SQL semantics (same WHERE clauses, same values,
one transaction each) with statements built once, bound parameters, a plain connection,
and four statements in ``succeed`` (the attempt count rides the state UPDATE). Only the
success path is rewritten; anything else (a lost lease) falls back to the original.

Used by ``bench/overhead.py``'s census (variant ``core_statements``); not pipeline code.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, insert, or_, update
from sqlalchemy.dialects.postgresql import insert as pg_insert

from models.base import utcnow
from models.entities import Attempt, Item, Result
from models.states import ItemState, sources_of
from models.store import AttemptRecord, ClaimedItem, Store

_CLAIM = (
    update(Item)
    .where(
        Item.id == bindparam("item_id"),
        Item.state.in_(sources_of(ItemState.RUNNING)),
        or_(Item.not_before.is_(None), Item.not_before <= bindparam("now")),
    )
    .values(
        state=ItemState.RUNNING,
        lease_token=bindparam("token"),
        lease_until=bindparam("lease_until"),
        dispatched_at=None,
        updated_at=bindparam("now"),
    )
    .returning(Item.id, Item.batch_id, Item.source, Item.fingerprint, Item.attempts)
)

_SUCCEED = (
    update(Item)
    .where(
        Item.id == bindparam("item_id"),
        Item.state == ItemState.RUNNING,
        Item.lease_token == bindparam("token"),
    )
    .values(
        state=ItemState.SUCCEEDED,
        lease_token=None,
        lease_until=None,
        updated_at=bindparam("now"),
        finished_at=bindparam("now"),
        last_error_code=None,
        last_error_message=None,
        attempts=Item.attempts + 1,
    )
    .returning(Item.attempts)
)

_ATTEMPT_COLUMNS = [
    "item_id",
    "number",
    "outcome",
    "started_at",
    "ended_at",
    "http_status",
    "error_code",
    "error_message",
    "request_id",
    "retry_after",
    "worker",
]
_INSERT_ATTEMPT = insert(Attempt).values({c: bindparam(c) for c in _ATTEMPT_COLUMNS})


def _tally_statement() -> Any:
    from models.tallies import BatchTally

    statement = pg_insert(BatchTally).values(
        {c: bindparam(c) for c in ("batch_id", "kind", "key", "shard", "value")}
    )
    return statement.on_conflict_do_update(
        index_elements=["batch_id", "kind", "key", "shard"],
        set_={"value": BatchTally.value + statement.excluded.value},
    )


class FastStore(Store):
    """:class:`Store` with ``claim`` and the success path of ``succeed`` on prebuilt SQL."""

    def __init__(self, engine: Any) -> None:
        super().__init__(engine)
        self._insert_result: dict[frozenset[str], Any] = {}
        try:
            self._tally: Any = _tally_statement()
        except ImportError:  # a tree without batch tallies
            self._tally = None

    def claim(self, item_id: int, token: str, lease_until: datetime) -> ClaimedItem | None:
        params = {"item_id": item_id, "now": utcnow(), "token": token, "lease_until": lease_until}
        with self.engine.begin() as conn:
            row = conn.execute(_CLAIM, params).first()
        if row is None:
            return None
        return ClaimedItem(
            item_id=row.id,
            batch_id=row.batch_id,
            source=row.source,
            fingerprint=row.fingerprint,
            attempts=row.attempts,
            lease_token=token,
        )

    def succeed(self, item: ClaimedItem, attempt: AttemptRecord, result: dict[str, Any]) -> bool:
        with self.engine.begin() as conn:
            number = conn.execute(
                _SUCCEED, {"item_id": item.item_id, "token": item.lease_token, "now": utcnow()}
            ).scalar()
            if number is not None:
                self._persist(conn, item, attempt, result, number)
        if number is None:
            return super().succeed(item, attempt, result)  # the lease moved on: as today
        return True

    def _persist(
        self,
        conn: Any,
        item: ClaimedItem,
        attempt: AttemptRecord,
        result: dict[str, Any],
        number: int,
    ) -> None:
        """The attempt row, the result row and the batch tallies, in the caller's transaction."""
        attempt_row = {
            "item_id": item.item_id,
            "number": number,
            "outcome": attempt.outcome,
            "started_at": attempt.started_at,
            "ended_at": attempt.ended_at,
            "http_status": attempt.http_status,
            "error_code": attempt.error_code,
            "error_message": attempt.error_message,
            "request_id": attempt.request_id,
            "retry_after": attempt.retry_after,
            "worker": attempt.worker,
        }
        conn.execute(_INSERT_ATTEMPT, attempt_row)
        conn.execute(self._result_statement(result), {"item_id": item.item_id, **result})
        if self._tally is not None:
            conn.execute(self._tally, self._tally_rows(item, result))

    def _result_statement(self, result: dict[str, Any]) -> Any:
        columns = frozenset(result)
        statement = self._insert_result.get(columns)
        if statement is None:
            names = ["item_id", *sorted(columns)]
            statement = insert(Result).values({c: bindparam(c) for c in names})
            self._insert_result[columns] = statement
        return statement

    def _tally_rows(self, item: ClaimedItem, result: dict[str, Any]) -> list[dict[str, Any]]:
        from models.tallies import SHARDS, TallyKind

        model = str(result.get("model") or "")
        increments = {
            (TallyKind.STATE, ItemState.SUCCEEDED.value): 1,
            (TallyKind.FINISH, str(result.get("finish_reason") or "")): 1,
            (TallyKind.INPUT_TOKENS, model): int(result.get("input_tokens") or 0),
            (TallyKind.OUTPUT_TOKENS, model): int(result.get("output_tokens") or 0),
            (TallyKind.IMAGE_TOKENS, model): int(result.get("image_tokens") or 0),
            (TallyKind.TOTAL_TOKENS, model): int(result.get("total_tokens") or 0),
        }
        return [
            {
                "batch_id": item.batch_id,
                "kind": kind.value,
                "key": key,
                "shard": item.item_id % SHARDS,
                "value": amount,
            }
            for (kind, key), amount in increments.items()
            if amount
        ]
