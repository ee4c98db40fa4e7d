"""The store on real SQLite and PostgreSQL: batches, claims, transitions, recovery."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import Engine, func, select

from qocr.models import Attempt, Item, ItemState, Result
from qocr.models.base import utcnow
from qocr.models.records import AttemptRecord, BatchSpec, ResultRecord, SourceRow
from qocr.models.states import AttemptOutcome, BatchState
from qocr.models.store import Store
from qocr.models.tallies import TallyKind, read_tallies

SPEC = BatchSpec(name="t", api="compatible", model="qwen-vl-ocr-latest", options={"model": "m"})


def _attempt(outcome: AttemptOutcome = AttemptOutcome.SUCCEEDED) -> AttemptRecord:
    now = utcnow()
    return AttemptRecord(started_at=now, ended_at=now, outcome=outcome, http_status=200)


def _result() -> ResultRecord:
    return ResultRecord(text="hello", finish_reason="stop", total_tokens=10)


def _batch(store: Store, n: int = 3) -> int:
    batch_id, count = store.create_batch(SPEC, (SourceRow(f"/img/{i}.png") for i in range(n)))
    assert count == n
    return batch_id


def test_create_batch_keeps_each_source_once(engine: Engine) -> None:
    store = Store(engine)
    rows = [SourceRow("a"), SourceRow("b"), SourceRow("a")]
    batch_id, count = store.create_batch(SPEC, rows)
    assert count == 2
    assert store.counts_by_state(batch_id)[ItemState.QUEUED] == 2
    batch = store.get_batch(batch_id)
    assert batch is not None and batch.total_items == 2


def test_a_failing_source_iterator_leaves_nothing(engine: Engine) -> None:
    store = Store(engine)

    def rows() -> Iterator[SourceRow]:
        yield SourceRow("a")
        raise ValueError("bad source on line 2")

    with pytest.raises(ValueError, match="line 2"):
        store.create_batch(SPEC, rows())
    with store.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Item)) == 0


def test_claim_is_exclusive_across_threads(engine: Engine) -> None:
    store = Store(engine)
    batch_id = _batch(store, 1)
    [item_id] = store.pick_for_dispatch(10, batch_id=batch_id)
    winners: list[str] = []
    barrier = threading.Barrier(8)

    def contend(token: str) -> None:
        barrier.wait()
        if store.claim(item_id, token, utcnow() + timedelta(seconds=30)) is not None:
            winners.append(token)

    threads = [threading.Thread(target=contend, args=(f"t{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(winners) == 1


def test_success_writes_one_result_and_attempt(engine: Engine) -> None:
    store = Store(engine)
    batch_id = _batch(store, 1)
    [item_id] = store.pick_for_dispatch(1)
    item = store.claim(item_id, "tok", utcnow() + timedelta(seconds=30))
    assert item is not None
    assert store.succeed(item, _attempt(), _result())
    # A second delivery of the same message finds nothing to claim.
    assert store.claim(item_id, "tok2", utcnow() + timedelta(seconds=30)) is None
    with store.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Result)) == 1
        attempt = session.scalars(select(Attempt)).one()
        assert (attempt.number, attempt.outcome) == (1, AttemptOutcome.SUCCEEDED)
        row = session.get(Item, item_id)
        assert row is not None
        assert (row.state, row.attempts) == (ItemState.SUCCEEDED, 1)
    assert store.complete_finished_batches() == [batch_id]
    batch = store.get_batch(batch_id)
    assert batch is not None and batch.state == BatchState.COMPLETED


def test_expired_lease_returns_the_item_and_the_old_worker_loses(engine: Engine) -> None:
    store = Store(engine)
    _batch(store, 1)
    [item_id] = store.pick_for_dispatch(1)
    stale = store.claim(item_id, "dead", utcnow() - timedelta(seconds=1))
    assert stale is not None
    report = store.reap(utcnow(), lost_after=timedelta(minutes=15))
    assert report.expired_leases == 1
    assert store.pick_for_dispatch(5) == [item_id]
    fresh = store.claim(item_id, "alive", utcnow() + timedelta(seconds=30))
    assert fresh is not None
    # The first worker wakes up and tries to save: its result is discarded, not doubled.
    assert not store.succeed(stale, _attempt(), _result())
    assert store.succeed(fresh, _attempt(), _result())
    with store.sessions() as session:
        assert session.scalar(select(func.count()).select_from(Result)) == 1
        outcomes = sorted(a.outcome for a in session.scalars(select(Attempt)))
        # The dead worker's try is counted (abandoned) when its lease is reaped.
        assert outcomes == [
            AttemptOutcome.ABANDONED,
            AttemptOutcome.DISCARDED,
            AttemptOutcome.SUCCEEDED,
        ]


def test_retry_later_waits_until_due(engine: Engine) -> None:
    store = Store(engine)
    _batch(store, 1)
    [item_id] = store.pick_for_dispatch(1)
    item = store.claim(item_id, "tok", utcnow() + timedelta(seconds=30))
    assert item is not None
    later = utcnow() + timedelta(seconds=60)
    assert store.retry_later(item, _attempt(AttemptOutcome.RETRY), later)
    assert store.pick_for_dispatch(5) == []
    assert store.claim(item_id, "early", utcnow() + timedelta(seconds=30)) is None
    assert store.pick_for_dispatch(5, now=later + timedelta(seconds=1)) == [item_id]


def test_lost_messages_and_broker_reset(engine: Engine) -> None:
    store = Store(engine)
    _batch(store, 3)
    picked = store.pick_for_dispatch(3)
    assert store.in_flight_count() == 3
    assert store.pick_for_dispatch(3) == []
    report = store.reap(utcnow() + timedelta(minutes=20), lost_after=timedelta(minutes=15))
    assert report.lost_messages == 3
    assert sorted(store.pick_for_dispatch(3)) == sorted(picked)
    assert store.reset_dispatched() == 3


def test_stop_and_cancel_and_retry(engine: Engine) -> None:
    store = Store(engine)
    batch_id = _batch(store, 3)
    [first, *_] = store.pick_for_dispatch(1)
    item = store.claim(first, "tok", utcnow() + timedelta(seconds=30))
    assert item is not None
    assert store.fail(item, "InvalidApiKey", "bad key", _attempt(AttemptOutcome.STOPPED))
    assert store.stop_batch(batch_id, "InvalidApiKey: bad key", "batch_stopped") == 2
    counts = store.counts_by_state(batch_id)
    assert (counts[ItemState.FAILED], counts[ItemState.CANCELLED]) == (1, 2)
    batch = store.get_batch(batch_id)
    assert batch is not None and batch.state == BatchState.STOPPED
    assert store.requeue_failed(batch_id, codes=["InvalidApiKey"]) == 1
    assert store.requeue_failed(batch_id) == 2
    assert store.counts_by_state(batch_id)[ItemState.QUEUED] == 3
    batch = store.get_batch(batch_id)
    assert batch is not None and batch.state == BatchState.RUNNING
    assert store.cancel_batch(batch_id) == 3


def _counts_from_rows(store: Store, batch_id: int) -> dict[ItemState, int]:
    with store.sessions() as session:
        rows = session.execute(
            select(Item.state, func.count()).where(Item.batch_id == batch_id).group_by(Item.state)
        )
        counts = dict.fromkeys(ItemState, 0)
        counts.update({state: int(count) for state, count in rows})
        return counts


def _codes_from_rows(store: Store, batch_id: int) -> dict[str, int]:
    with store.sessions() as session:
        rows = session.execute(
            select(Item.last_error_code, func.count())
            .where(Item.batch_id == batch_id, Item.state.in_(["failed", "cancelled"]))
            .group_by(Item.last_error_code)
        )
        return {str(code): int(count) for code, count in rows}


def test_tallies_match_the_rows_through_every_transition(engine: Engine) -> None:
    store = Store(engine)
    batch_id = _batch(store, 12)
    ids = store.pick_for_dispatch(12)

    def check() -> None:
        assert store.counts_by_state(batch_id) == _counts_from_rows(store, batch_id)
        with store.sessions() as session:
            totals = read_tallies(session, [batch_id])[batch_id]
        codes = {key: value for (kind, key), value in totals.items() if kind == TallyKind.ERROR}
        assert codes == _codes_from_rows(store, batch_id)

    claimed = [store.claim(i, f"t{i}", utcnow() + timedelta(seconds=30)) for i in ids[:8]]
    check()
    for item in claimed[:4]:
        assert item is not None and store.succeed(item, _attempt(), _result())
    for item in claimed[4:6]:
        assert item is not None and store.fail(item, "image_empty", "empty")
    check()
    store.stop_batch(batch_id, "InvalidApiKey: no", "batch_stopped")  # 4 queued → cancelled
    check()
    assert store.requeue_failed(batch_id, codes=["image_empty"]) == 2
    check()
    assert store.requeue_failed(batch_id) == 4
    check()
    store.cancel_batch(batch_id)
    check()
    with store.sessions() as session:
        totals = read_tallies(session, [batch_id])[batch_id]
    assert totals[(TallyKind.TOTAL_TOKENS, "")] == 40  # four results of 10 tokens each
    assert totals[(TallyKind.FINISH, "stop")] == 4
