"""The dispatcher on real SQL and Redis: a bounded window, failed publishes, a lost broker,
and one publisher at a time under the fleet's lock."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

import pytest
import redis
from sqlalchemy import Engine, event, text

from qocr.models import BatchState, Item
from qocr.models.base import utcnow
from qocr.models.records import AttemptRecord, BatchSpec, ResultRecord, SourceRow
from qocr.models.states import AttemptOutcome
from qocr.models.store import Store
from qocr.scheduler.dispatch import EPOCH_KEY, Dispatcher, DispatchService, Publish, top_up_once
from qocr.scheduler.fleet_lock import LOCK_KEY, FleetLock

SPEC = BatchSpec(name="d", api="compatible", model="m", options={"model": "m"})
LOST_AFTER = timedelta(minutes=15)


def dispatcher_of(
    store: Store,
    publish: Publish,
    window: int = 10,
    redis_client: redis.Redis[bytes] | None = None,
) -> Dispatcher:
    return Dispatcher(store, publish, window, lost_after=LOST_AFTER, redis_client=redis_client)


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
    dispatcher = dispatcher_of(store, publish)
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
    dispatcher = dispatcher_of(store, Recorder(fail=True))
    with pytest.raises(ConnectionError):
        dispatcher.top_up()
    assert store.in_flight_count() == 0
    good = Recorder()
    assert dispatcher_of(store, good).top_up() == 5


def test_a_broker_that_lost_its_data_gets_the_messages_again(
    engine: Engine, redis_url: str
) -> None:
    store, _ = _store_with(engine, 4)
    client = redis.Redis.from_url(redis_url)
    publish = Recorder()
    dispatcher = dispatcher_of(store, publish, redis_client=client)
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
    dispatcher = dispatcher_of(store, Recorder())
    dispatcher.tick()
    store.cancel_batch(batch_id)
    other, _ = store.create_batch(
        BatchSpec(name="e", api="compatible", model="m", options={"model": "m"}),
        [SourceRow("only")],
    )
    [item_id] = store.pick_for_dispatch(1, batch_id=other)
    item = store.claim(item_id, "t", utcnow() + timedelta(seconds=30))
    assert item is not None
    store.succeed(item, _attempt(), ResultRecord(text="x"))
    assert dispatcher.tick().completed_batches == 1
    other_batch = store.get_batch(other)
    assert other_batch is not None and other_batch.state == BatchState.COMPLETED
    batch = store.get_batch(batch_id)
    assert batch is not None and batch.state == BatchState.CANCELLED


def test_one_dispatcher_holds_the_lock(engine: Engine, redis_url: str) -> None:
    store, _ = _store_with(engine, 1)
    first_client = redis.Redis.from_url(redis_url)
    second_client = redis.Redis.from_url(redis_url)
    first = DispatchService(dispatcher_of(store, Recorder()), FleetLock(first_client))
    second = DispatchService(dispatcher_of(store, Recorder()), FleetLock(second_client))
    assert first.holds_lock()
    assert not second.holds_lock()
    assert first.holds_lock()  # renewed by its owner
    first_client.delete(LOCK_KEY)  # the owner died and its lock expired
    assert second.holds_lock()
    first_client.close()
    second_client.close()


def _attempt() -> AttemptRecord:
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
    dispatcher = dispatcher_of(store, publish)
    dispatcher.top_up()
    first = publish.by_queue[False][0]
    assert store.claim(first, "dead", utcnow() - timedelta(seconds=1)) is not None
    store.reap(utcnow(), lost_after=LOST_AFTER)
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
    dispatcher_of(store, submitted, redis_client=client).top_up()  # `qocr submit`
    worker = Recorder()
    report = dispatcher_of(store, worker, redis_client=client).tick()
    assert report.broker_reset == 0
    assert worker.published == []
    assert len(submitted.published) == 3
    client.close()


def test_a_one_shot_top_up_waits_for_the_running_dispatcher(engine: Engine, redis_url: str) -> None:
    store, _ = _store_with(engine, 3)
    client = redis.Redis.from_url(redis_url)
    running = DispatchService(dispatcher_of(store, Recorder()), FleetLock(client))
    assert running.holds_lock()
    # `qocr submit` or a scheduled run while a worker's dispatcher holds the lock: nothing
    # is published twice over the window; the running dispatcher sends the items.
    submitted = Recorder()
    assert top_up_once(dispatcher_of(store, submitted), FleetLock(client)) is None
    assert submitted.published == []
    assert store.in_flight_count() == 0
    assert running.holds_lock()  # still its lock
    client.close()


def test_a_one_shot_top_up_takes_a_free_lock_and_gives_it_back(
    engine: Engine, redis_url: str
) -> None:
    store, _ = _store_with(engine, 3)
    client = redis.Redis.from_url(redis_url)
    submitted = Recorder()
    assert top_up_once(dispatcher_of(store, submitted, redis_client=client), FleetLock(client)) == 3
    assert len(submitted.published) == 3
    assert client.get(LOCK_KEY) is None  # given back: a worker's dispatcher takes it at once
    assert DispatchService(dispatcher_of(store, Recorder()), FleetLock(client)).holds_lock()
    client.close()


def test_a_lock_is_released_only_by_its_holder(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    holder, other = FleetLock(client), FleetLock(client)
    assert holder.acquire()
    other.release()  # not its lock: nothing happens
    assert client.get(LOCK_KEY) == holder.identity.encode()
    assert not other.acquire()
    holder.release()
    assert other.acquire()
    client.close()


def test_a_one_shot_publish_sends_only_the_first_seconds_of_capacity(
    database_url: str, engine: Engine, redis_url: str
) -> None:
    """`qocr submit`'s publish: 5 s of capacity (every worker's dispatcher tops up the rest
    within a second), not the 2-minute window that cost a 1M-line submit 2.75 s."""
    from qocr.settings import Settings
    from qocr.worker.app import create_app
    from qocr.worker.publish import publish_now
    from qocr.worker.queues import QUEUE

    store, _ = _store_with(engine, 300)
    settings = Settings(
        database_url=database_url, broker_url=redis_url, rpm=1200, DASHSCOPE_API_KEY=None
    )
    app = create_app(settings)
    try:
        assert publish_now(app, settings, store) == 100  # 1,200 a minute for 5 s
    finally:
        app.close()
    assert store.in_flight_count() == 100
    assert redis.Redis.from_url(redis_url).llen(QUEUE) == 100


def test_a_pick_reads_the_queue_in_index_order_and_never_sorts_it(engine: Engine) -> None:
    """A million queued items must cost a tick what ten do: no Sort in any pick's plan."""
    if engine.dialect.name != "postgresql":
        pytest.skip("the plans checked are PostgreSQL's")
    store = Store(engine)
    older, _ = store.create_batch(SPEC, (SourceRow(f"/a/{i}.png") for i in range(3000)))
    newer, _ = store.create_batch(SPEC, (SourceRow(f"/b/{i}.png") for i in range(3000)))
    with engine.begin() as conn:
        conn.execute(text("ANALYZE items"))
    picks: list[tuple[str, Any]] = []

    def record(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().startswith("SELECT items.id"):
            picks.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", record)
    try:
        retries = store.pick_for_dispatch(10, retries_only=True)
        fresh = store.pick_for_dispatch(10)
        more = store.pick_for_dispatch(3000)
    finally:
        event.remove(engine, "before_cursor_execute", record)
    assert retries == []
    assert len(fresh) == 10 and len(more) == 3000
    assert fresh == sorted(fresh)  # the older batch first, in id order
    assert more[-10:] == sorted(more[-10:])
    assert {batch_of(store, i) for i in fresh} == {older}
    assert batch_of(store, more[-1]) == newer  # the older batch ran dry: the next one fills
    assert picks
    with engine.connect() as conn:
        for statement, parameters in picks:
            cursor = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
            cursor.execute("EXPLAIN " + statement, parameters)
            plan = "\n".join(row[0] for row in cursor.fetchall())
            assert "Sort" not in plan, plan


def batch_of(store: Store, item_id: int) -> int:
    with store.sessions() as session:
        item = session.get(Item, item_id)
        assert item is not None
        return item.batch_id
