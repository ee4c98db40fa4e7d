"""What a fault did to a batch: the figures the fault suite asserts and bench/faults.py records.

Every figure is read from an independent witness: item states and result rows from SQL,
paid calls and requests per image from the emulator's own counters.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import func, select

from qocr.models import Attempt, Item, ItemState, Result
from qocr.models.states import TERMINAL_ITEM_STATES
from qocr.models.tallies import TallyKind, read_tallies
from tests.support.pipeline import Deployment


@dataclass(frozen=True)
class FaultReport:
    """One fault's cost. ``lost``, ``duplicate_results`` must be 0; the rest are bounded."""

    scenario: str
    items: int
    succeeded: int
    failed: int
    lost: int  # items not finished, or succeeded without exactly one result
    duplicate_results: int
    paid_twice: int  # images the provider billed more than once
    in_flight_at_fault: int  # items running when the fault struck
    max_calls_per_image: int  # requests that reached the provider for one image
    attempt_rows: int  # attempts that sent a request
    provider_requests: int
    seconds_to_complete: float  # from the fault's end to the batch's last item finished
    # Running totals (batch_tallies, what `qocr status` reads) that differ from a GROUP BY
    # of the rows they count: must be 0.
    tallies_off: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def running_count(deployment: Deployment, batch_id: int) -> int:
    return deployment.counts(batch_id)[ItemState.RUNNING]


def measure(
    deployment: Deployment,
    batch_id: int,
    *,
    scenario: str,
    total: int,
    in_flight_at_fault: int,
    fault_ended_at: float,
    finished_at: float | None = None,
) -> FaultReport:
    """Read the batch's figures once it is finished (or the wait for it gave up)."""
    finished_at = time.monotonic() if finished_at is None else finished_at
    with deployment.store.sessions() as session:
        states = dict(
            session.execute(
                select(Item.state, func.count())
                .where(Item.batch_id == batch_id)
                .group_by(Item.state)
            ).all()
        )
        results_per_item = session.execute(
            select(Item.id, Item.state, func.count(Result.item_id))
            .outerjoin(Result, Result.item_id == Item.id)
            .where(Item.batch_id == batch_id)
            .group_by(Item.id, Item.state)
        ).all()
        # The tries that sent a request: what the provider must have seen, one for one.
        attempt_rows = session.scalar(
            select(func.count())
            .select_from(Attempt)
            .join(Item, Item.id == Attempt.item_id)
            .where(Item.batch_id == batch_id, Attempt.called.is_(True))
        )
        tallies_off = _tallies_off(session, batch_id)
    unfinished = sum(
        count
        for state, count in states.items()
        if state not in (ItemState.SUCCEEDED, ItemState.FAILED, ItemState.CANCELLED)
    )
    bad_results = sum(
        1
        for _, state, results in results_per_item
        if (state == ItemState.SUCCEEDED) != (results == 1)
    )
    stats = deployment.emulator.stats()
    paid = stats["successes_per_image"]
    per_image = stats.get("requests_per_image") or {}
    return FaultReport(
        scenario=scenario,
        items=total,
        succeeded=int(states.get(ItemState.SUCCEEDED, 0)),
        failed=int(states.get(ItemState.FAILED, 0)),
        lost=unfinished + bad_results + max(0, total - len(results_per_item)),
        duplicate_results=sum(max(0, results - 1) for _, _, results in results_per_item),
        paid_twice=sum(1 for count in paid.values() if count > 1),
        in_flight_at_fault=in_flight_at_fault,
        max_calls_per_image=max(per_image.values(), default=0),
        attempt_rows=int(attempt_rows or 0),
        provider_requests=int(stats["requests"]),
        seconds_to_complete=round(max(0.0, finished_at - fault_ended_at), 1),
        tallies_off=tallies_off,
    )


def _tallies_off(session: Any, batch_id: int) -> int:
    """How many of the batch's tallies (terminal states, finish reasons, tokens by model)
    differ from counting its rows."""
    tallies = read_tallies(session, [batch_id])[batch_id]
    expected: dict[tuple[TallyKind, str], int] = {}
    for state, count in session.execute(
        select(Item.state, func.count())
        .where(Item.batch_id == batch_id, Item.state.in_(TERMINAL_ITEM_STATES))
        .group_by(Item.state)
    ):
        expected[(TallyKind.STATE, ItemState(state).value)] = int(count)
    rows = session.execute(
        select(
            Result.finish_reason,
            Result.model,
            func.count(),
            func.sum(Result.input_tokens),
            func.sum(Result.output_tokens),
            func.sum(Result.total_tokens),
        )
        .join(Item, Item.id == Result.item_id)
        .where(Item.batch_id == batch_id)
        .group_by(Result.finish_reason, Result.model)
    )
    for finish, model, count, input_tokens, output_tokens, total_tokens in rows:
        for key, amount in (
            ((TallyKind.FINISH, finish or ""), count),
            ((TallyKind.INPUT_TOKENS, model or ""), input_tokens),
            ((TallyKind.OUTPUT_TOKENS, model or ""), output_tokens),
            ((TallyKind.TOTAL_TOKENS, model or ""), total_tokens),
        ):
            expected[key] = expected.get(key, 0) + int(amount or 0)
    kinds = {kind for kind, _ in expected} | {
        TallyKind.STATE,
        TallyKind.FINISH,
        TallyKind.INPUT_TOKENS,
        TallyKind.OUTPUT_TOKENS,
        TallyKind.TOTAL_TOKENS,
    }
    counted = {key: value for key, value in tallies.items() if key[0] in kinds and value}
    wanted = {key: value for key, value in expected.items() if value}
    return sum(1 for key in counted.keys() | wanted.keys() if counted.get(key) != wanted.get(key))
