"""The dispatcher on real SQL and Redis: a bounded window, failed publishes, a lost broker."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

import pytest
import redis
from sqlalchemy import Engine

from qocr.models import BatchState
from qocr.models.base import utcnow
from qocr.models.store import BatchSpec, SourceRow, Store
from qocr.scheduler.dispatch import EPOCH_KEY, LOCK_KEY, Dispatcher, DispatchService

SPEC = BatchSpec(name="d", api="compatible", model="m", options={"model": "m"})


class Recorder:
    def __init__(self, fail: bool = False) -> None:
        self.published: list[int] = []
        self.fail = fail

    def __call__(self, item_ids: Sequence[int], retry: bool = False) -> None:
        if self.fail:
            raise ConnectionError("broker down")
        self.published.extend(item_ids)


def _store_with(engine: Engine, n: int) -> tuple[Store, int]:
    store = Store(engine)
    batch_id, _ = store.create_batch(SPEC, (SourceRow(f"s{i}") for i in range(n)))
    return store, batch_id


def test_window_bounds_what_is_in_the_broker(engine: Engine) -> None:
    store, _ = _store_with(engine, 25)
    publish = Recorder()
    dispatcher = Dispatcher(store, publish, window=10)
    assert dispatcher.top_up() == 10
    assert dispatcher.top_up() == 0  # full: nothing more until items finish
    # Three items finish; the window refills by exactly three.
    for item_id in publish.published[:3]:
        item = store.claim(item_id, "t", utcnow() + timedelta(seconds=30))
        assert item is not None
        store.fail(item, "x", "done")
    assert dispatcher.top_up() == 3
    assert len(set(publish.published)) == 13


def test_a_failed_publish_dispatches_nothing(engine: Engine) -> None:
    store, _ = _store_with(engine, 5)
    dispatcher = Dispatcher(store, Recorder(fail=True), window=10)
    with pytest.raises(ConnectionError):
        dispatcher.top_up()
    assert store.in_flight_count() == 0
    good = Recorder()
    assert Dispatcher(store, good, window=10).top_up() == 5


def test_a_broker_that_lost_its_data_gets_the_messages_again(
    engine: Engine, redis_url: str
) -> None:
    store, _ = _store_with(engine, 4)
    client = redis.Redis.from_url(redis_url)
    publish = Recorder()
    dispatcher = Dispatcher(store, publish, window=10, redis_client=client)
    dispatcher.tick()
    assert len(publish.published) == 4
    dispatcher.tick()
    assert len(publish.published) == 4  # the epoch is there: nothing lost
    client.delete(EPOCH_KEY)  # what a restart without persistence looks like
    report = dispatcher.tick()
    assert report.broker_reset == 4
    assert sorted(publish.published[4:]) == sorted(publish.published[:4])
    client.close()


def test_tick_closes_finished_and_cancelled_batches(engine: Engine) -> None:
    store, batch_id = _store_with(engine, 2)
    dispatcher = Dispatcher(store, Recorder(), window=10)
    dispatcher.tick()
    store.cancel_batch(batch_id)
    other, _ = store.create_batch(
        BatchSpec(name="e", api="compatible", model="m", options={"model": "m"}),
        [SourceRow("only")],
    )
    [item_id] = store.pick_for_dispatch(1, batch_id=other)
    item = store.claim(item_id, "t", utcnow() + timedelta(seconds=30))
    assert item is not None
    store.succeed(item, _attempt(), {"text": "x"})
    assert dispatcher.tick().completed_batches == 1
    assert store.get_batch(other).state == BatchState.COMPLETED  # type: ignore[union-attr]
    assert store.get_batch(batch_id).state == BatchState.CANCELLED  # type: ignore[union-attr]


def test_one_dispatcher_holds_the_lock(engine: Engine, redis_url: str) -> None:
    store, _ = _store_with(engine, 1)
    first_client = redis.Redis.from_url(redis_url)
    second_client = redis.Redis.from_url(redis_url)
    first = DispatchService(Dispatcher(store, Recorder(), 10), first_client)
    second = DispatchService(Dispatcher(store, Recorder(), 10), second_client)
    assert first.holds_lock()
    assert not second.holds_lock()
    assert first.holds_lock()  # renewed by its owner
    first_client.delete(LOCK_KEY)  # the owner died and its lock expired
    assert second.holds_lock()
    first_client.close()
    second_client.close()


def _attempt():  # type: ignore[no-untyped-def]
    from qocr.models.states import AttemptOutcome
    from qocr.models.store import AttemptRecord

    now = utcnow()
    return AttemptRecord(started_at=now, ended_at=now, outcome=AttemptOutcome.SUCCEEDED)


class QueueRecorder:
    def __init__(self) -> None:
        self.by_queue: dict[bool, list[int]] = {False: [], True: []}

    def __call__(self, item_ids: Sequence[int], retry: bool) -> None:
        self.by_queue[retry].extend(item_ids)


def test_items_of_a_dead_worker_skip_the_line(engine: Engine) -> None:
    store, _ = _store_with(engine, 6)
    publish = QueueRecorder()
    dispatcher = Dispatcher(store, publish, window=10)
    dispatcher.top_up()
    first = publish.by_queue[False][0]
    assert store.claim(first, "dead", utcnow() - timedelta(seconds=1)) is not None
    store.reap(utcnow(), lost_after=timedelta(minutes=15))
    dispatcher.top_up()
    # Its item comes back on the retry queue, not behind the five still waiting.
    assert publish.by_queue[True] == [first]
    assert len(publish.by_queue[False]) == 6


def test_submit_sets_the_epoch_so_workers_do_not_dispatch_twice(
    engine: Engine, redis_url: str
) -> None:
    store, _ = _store_with(engine, 3)
    client = redis.Redis.from_url(redis_url)
    submitted = Recorder()
    Dispatcher(store, submitted, window=10, redis_client=client).top_up()  # `qocr submit`
    worker = Recorder()
    report = Dispatcher(store, worker, window=10, redis_client=client).tick()
    assert report.broker_reset == 0
    assert worker.published == []
    assert len(submitted.published) == 3
    client.close()
