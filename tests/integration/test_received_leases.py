"""Leases on received messages, on real SQL: renewed while the worker holds the message."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from datetime import timedelta

from sqlalchemy import Engine, func, select

from qocr.models.base import utcnow
from qocr.models.entities import Item
from qocr.models.records import BatchSpec, SourceRow
from qocr.models.store import Store
from qocr.worker.queues import ITEM_TASK
from qocr.worker.received import ReceivedLeases

SPEC = BatchSpec(name="t", api="compatible", model="qwen-vl-ocr-latest", options={"model": "m"})


@dataclass
class Request:
    """What Celery's worker state holds of a message: its task name and arguments."""

    args: list[int]
    task_name: str = ITEM_TASK


@dataclass
class Held:
    requests: list[Request] = field(default_factory=list)

    def __call__(self) -> list[Request]:
        return list(self.requests)


def test_only_messages_the_worker_still_holds_keep_their_lease(engine: Engine) -> None:
    store = Store(engine)
    store.create_batch(SPEC, [SourceRow(f"/img/{i}.png") for i in range(3)])
    first, second, _in_broker = store.pick_for_dispatch(3)
    held = Held([Request([first]), Request([second]), Request([0], task_name="qocr.other")])
    leases = ReceivedLeases(store, timedelta(seconds=2), renewals_per_lease=2, held=held)
    for request in held.requests[:2]:
        leases.on_task_received(request=request)
    assert leases.lease_received() == 2  # what the leasing thread does when woken

    held.requests.pop(1)  # the worker let go of the second message (acked after a failure)
    time.sleep(1.5)
    assert leases.renew() == 1  # only the first is still held

    # One second later: the second's lease (from its receipt) has run out, the first's
    # (renewed just now) has not.
    report = store.reap(utcnow() + timedelta(seconds=1), lost_after=timedelta(minutes=15))
    # The second item's lease ran out: dispatched again; the first is still held;
    # the third was never received by anyone (waiting in the broker): untouched.
    assert report.stranded_messages == 1
    later = utcnow() + timedelta(seconds=2)
    assert store.pick_for_dispatch(3, now=later) == [second]
    assert store.pick_for_dispatch(3, now=later) == []  # the third is still in the broker


def test_a_received_message_is_leased_by_the_leasing_thread_at_once(engine: Engine) -> None:
    store = Store(engine)
    store.create_batch(SPEC, [SourceRow(f"/img/{i}.png") for i in range(2)])
    first, second = store.pick_for_dispatch(2)
    # Renewals a minute apart: only a receipt can lease the items within the test.
    leases = ReceivedLeases(store, timedelta(seconds=60), renewals_per_lease=1, held=Held())
    leases.start()
    try:
        leases.on_task_received(request=Request([first]))
        leases.on_task_received(request=Request([second]))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and _leased(engine, [first, second]) < 2:
            time.sleep(0.02)
        assert _leased(engine, [first, second]) == 2
    finally:
        leases.stop()


def _leased(engine: Engine, item_ids: list[int]) -> int:
    with engine.connect() as conn:
        return int(
            conn.scalar(
                select(func.count())
                .select_from(Item)
                .where(Item.id.in_(item_ids), Item.lease_until.is_not(None))
            )
            or 0
        )
