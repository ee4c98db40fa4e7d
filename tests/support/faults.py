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
    )
