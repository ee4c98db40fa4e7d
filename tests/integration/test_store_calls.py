"""Calls counted before they leave, on real SQLite and PostgreSQL.

What bounds the calls per item by ``max_attempts`` on every path: the count and an in-flight
attempt row commit before the request leaves; the reaper ends what a dead worker left in
flight; a paid result whose save failed is kept even after its lease passed on.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import Engine, select

from qocr.models import Attempt, Item, ItemState, Result
from qocr.models.base import utcnow
from qocr.models.records import AttemptRecord, BatchSpec, ClaimedItem, ResultRecord, SourceRow
from qocr.models.states import AttemptOutcome
from qocr.models.store import Store

SPEC = BatchSpec(name="t", api="compatible", model="qwen-vl-ocr-latest", options={"model": "m"})
LOST_AFTER = timedelta(minutes=15)


def _one_item(store: Store) -> int:
    store.create_batch(SPEC, [SourceRow("/img/a.png")])
    [item_id] = store.pick_for_dispatch(1)
    return item_id


def _claim(store: Store, item_id: int, token: str, seconds: float = 30) -> ClaimedItem:
    item = store.claim(item_id, token, utcnow() + timedelta(seconds=seconds))
    assert item is not None
    return item


def _attempts(store: Store, item_id: int) -> list[tuple[int, AttemptOutcome]]:
    with store.sessions() as session:
        rows = session.execute(
            select(Attempt.number, Attempt.outcome)
            .where(Attempt.item_id == item_id)
            .order_by(Attempt.number)
        )
        return [(number, outcome) for number, outcome in rows]


def _item(store: Store, item_id: int) -> Item:
    with store.sessions() as session:
        item = session.get(Item, item_id)
        assert item is not None
        return item


def test_a_call_is_counted_and_on_record_before_it_leaves(engine: Engine) -> None:
    store = Store(engine)
    item = _claim(store, _one_item(store), "tok")
    number = store.begin_call(item, utcnow(), "w1", max_attempts=3)
    assert number == 1
    assert _attempts(store, item.item_id) == [(1, AttemptOutcome.IN_FLIGHT)]
    assert _item(store, item.item_id).attempts == 1

    now = utcnow()
    done = AttemptRecord(now, now, AttemptOutcome.SUCCEEDED, http_status=200, number=number)
    assert store.succeed(item, done, ResultRecord(text="hi", total_tokens=5))
    # The same row is filled in: one row per call, never two.
    assert _attempts(store, item.item_id) == [(1, AttemptOutcome.SUCCEEDED)]
    assert _item(store, item.item_id).attempts == 1


def test_no_call_may_leave_once_the_attempts_are_spent(engine: Engine) -> None:
    store = Store(engine)
    item = _claim(store, _one_item(store), "tok")
    assert store.begin_call(item, utcnow(), None, max_attempts=2) == 1
    assert store.begin_call(item, utcnow(), None, max_attempts=2) == 2
    assert store.begin_call(item, utcnow(), None, max_attempts=2) is None
    assert _item(store, item.item_id).attempts == 2


def test_no_call_may_leave_on_a_lease_that_moved_on(engine: Engine) -> None:
    store = Store(engine)
    item_id = _one_item(store)
    stale = _claim(store, item_id, "old", seconds=-1)
    store.reap(utcnow(), LOST_AFTER)
    store.pick_for_dispatch(1)
    _claim(store, item_id, "new")
    assert store.begin_call(stale, utcnow(), None, max_attempts=8) is None


def test_the_reaper_abandons_a_dead_workers_call_and_counts_a_dead_try(engine: Engine) -> None:
    store = Store(engine)
    store.create_batch(SPEC, [SourceRow("/img/a.png"), SourceRow("/img/b.png")])
    called_id, silent_id = store.pick_for_dispatch(2)
    called = _claim(store, called_id, "a", seconds=-1)
    _claim(store, silent_id, "b", seconds=-1)  # died before calling (image load, throttle)
    assert store.begin_call(called, utcnow(), None, max_attempts=8) == 1

    report = store.reap(utcnow(), LOST_AFTER)

    assert report.expired_leases == 2
    # The call in flight was counted when it left: abandoned, not counted again.
    assert _attempts(store, called_id) == [(1, AttemptOutcome.ABANDONED)]
    assert _item(store, called_id).attempts == 1
    # A try that died before calling is counted now, so a crash loop runs out of attempts.
    assert _attempts(store, silent_id) == [(1, AttemptOutcome.ABANDONED)]
    assert _item(store, silent_id).attempts == 1
    assert {_item(store, i).state for i in (called_id, silent_id)} == {ItemState.QUEUED}


def test_a_received_message_is_leased_and_comes_back_when_its_worker_dies(
    engine: Engine,
) -> None:
    store = Store(engine)
    item_id = _one_item(store)
    assert store.hold_received([item_id], utcnow() + timedelta(seconds=30)) == [item_id]
    # Alive and renewing: neither stranded nor taken for a lost message.
    report = store.reap(utcnow(), LOST_AFTER)
    assert (report.stranded_messages, report.lost_messages) == (0, 0)
    assert store.pick_for_dispatch(1) == []

    assert store.hold_received([item_id], utcnow() - timedelta(seconds=1)) == [item_id]
    report = store.reap(utcnow(), LOST_AFTER)
    assert report.stranded_messages == 1
    assert store.pick_for_dispatch(1) == [item_id]  # dispatched again at once
    # Nothing ran: no try is counted for a message that was never started.
    assert _attempts(store, item_id) == []


def test_holding_a_received_message_stops_once_it_is_claimed(engine: Engine) -> None:
    store = Store(engine)
    item_id = _one_item(store)
    assert store.hold_received([item_id], utcnow() + timedelta(seconds=30)) == [item_id]
    _claim(store, item_id, "tok")
    assert store.hold_received([item_id], utcnow() + timedelta(seconds=30)) == []


def test_a_kept_result_is_saved_even_after_its_lease_passed_on(engine: Engine) -> None:
    store = Store(engine)
    item_id = _one_item(store)
    first = _claim(store, item_id, "first", seconds=-1)
    number = store.begin_call(first, utcnow(), "w1", max_attempts=8)
    # The database was away while the call ran; the lease expired and was reaped, and
    # another worker claimed the item.
    store.reap(utcnow(), LOST_AFTER)
    store.pick_for_dispatch(1)
    second = _claim(store, item_id, "second")

    now = utcnow()
    kept = AttemptRecord(now, now, AttemptOutcome.SUCCEEDED, http_status=200, number=number)
    assert store.save_kept_result(first, kept, ResultRecord(text="paid once", total_tokens=5))

    assert _item(store, item_id).state == ItemState.SUCCEEDED
    # The second worker's later save loses: one result, the paid one.
    late = AttemptRecord(now, now, AttemptOutcome.SUCCEEDED, http_status=200)
    assert not store.succeed(second, late, ResultRecord(text="paid twice"))
    with store.sessions() as session:
        assert session.scalars(select(Result.text)).all() == ["paid once"]
    assert _attempts(store, item_id)[0] == (1, AttemptOutcome.SUCCEEDED)


def test_a_kept_result_for_a_finished_item_is_not_a_second_result(engine: Engine) -> None:
    store = Store(engine)
    item_id = _one_item(store)
    first = _claim(store, item_id, "first", seconds=-1)
    number = store.begin_call(first, utcnow(), None, max_attempts=8)
    store.reap(utcnow(), LOST_AFTER)
    store.pick_for_dispatch(1)
    second = _claim(store, item_id, "second")
    now = utcnow()
    assert store.succeed(
        second, AttemptRecord(now, now, AttemptOutcome.SUCCEEDED), ResultRecord(text="b")
    )
    kept = AttemptRecord(now, now, AttemptOutcome.SUCCEEDED, number=number)
    assert not store.save_kept_result(first, kept, ResultRecord(text="a"))
    with store.sessions() as session:
        assert session.scalars(select(Result.text)).all() == ["b"]
    outcomes = dict(_attempts(store, item_id))
    assert outcomes[1] == AttemptOutcome.DISCARDED


def test_with_the_broker_idle_an_unreceived_message_is_lost_sooner(engine: Engine) -> None:
    store = Store(engine)
    store.create_batch(SPEC, [SourceRow("/img/a.png"), SourceRow("/img/b.png")])
    fetched_by_the_dead, received = store.pick_for_dispatch(2)
    store.hold_received([received], utcnow() + timedelta(minutes=5))
    later = utcnow() + timedelta(seconds=40)
    # Messages may still wait in the broker's queues: only the long timeout applies.
    assert store.reap(later, LOST_AFTER).lost_messages == 0
    # The queues are empty: a message nobody received after 30 s is in no queue.
    report = store.reap(later, LOST_AFTER, idle_lost_after=timedelta(seconds=30))
    assert report.lost_messages == 1
    assert store.pick_for_dispatch(2, now=later) == [fetched_by_the_dead]
