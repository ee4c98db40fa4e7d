"""The decisions of one item's story, against a scripted service (httpx.MockTransport).

Real SQL (SQLite and PostgreSQL), real client; only the service's answers are scripted.
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol

import httpx
import pytest
from sqlalchemy import Engine, select, update

from qocr.emulator.testing import running_emulator
from qocr.models import Attempt, BatchState, Item, ItemState, Result
from qocr.models.base import utcnow
from qocr.models.records import AttemptRecord, BatchSpec, ResultRecord, SourceRow
from qocr.models.states import AttemptOutcome
from qocr.models.store import Store
from qocr.qwen.client import QwenOCRClient
from qocr.qwen.errors import RateLimitError, ServerError
from qocr.qwen.options import RecognizeOptions
from qocr.settings import get_settings, load_settings
from qocr.worker.app import create_app
from qocr.worker.breaker import CallOutcome
from qocr.worker.fetch import ImageFetcher
from qocr.worker.process import (
    LATER_BASE_SECONDS,
    SERVER_ERROR_CAP_SECONDS,
    ItemProcessor,
    Outcome,
    later_seconds,
)
from qocr.worker.queues import ITEM_TASK
from qocr.worker.runtime import memory_runtime
from tests.support.images import expected_text, write_pngs

Handler = Callable[[httpx.Request], httpx.Response]
MODEL = "qwen-vl-ocr-latest"

OK_BODY = {
    "id": "chatcmpl-1",
    "object": "chat.completion",
    "created": 1,
    "model": "qwen-vl-ocr-latest",
    "choices": [
        {"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": "hi"}}
    ],
    "usage": {"prompt_tokens": 40, "completion_tokens": 2, "total_tokens": 42},
}


def error(status: int, code: str, headers: dict[str, str] | None = None) -> httpx.Response:
    body = {
        "error": {"message": f"scripted {code}", "type": code, "param": None, "code": code},
        "request_id": "req-1",
    }
    return httpx.Response(status, json=body, headers=headers)


class Scripted:
    """Answers in order from a list (an exception is raised); counts calls.

    ``while_calling`` runs during each call, before the answer: what the world does meanwhile.
    """

    def __init__(self, answers: list[httpx.Response | Exception]) -> None:
        self.answers = answers
        self.calls = 0
        self.while_calling: Callable[[], None] | None = None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        answer = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        if self.while_calling is not None:
            self.while_calling()
        if isinstance(answer, Exception):
            raise answer
        return answer


class Make(Protocol):
    def __call__(
        self, script: Scripted, items: int = 1, sources: list[str] | None = None
    ) -> tuple[ItemProcessor, Store, list[int]]: ...


@pytest.fixture
def setup(engine: Engine, tmp_path: Path) -> Iterator[Make]:
    processors: list[ItemProcessor] = []

    def make(
        script: Scripted, items: int = 1, sources: list[str] | None = None
    ) -> tuple[ItemProcessor, Store, list[int]]:
        settings = load_settings(DASHSCOPE_API_KEY="sk-x", max_attempts=4, base_url="http://svc")
        store = Store(engine)
        if sources is None:
            sources = [str(path) for path in write_pngs(tmp_path / "img", items)]
        options = RecognizeOptions(model="qwen-vl-ocr-latest")
        spec = BatchSpec(name="t", api="compatible", model=options.model, options=options.to_dict())
        store.create_batch(spec, (SourceRow(source) for source in sources))
        runtime = memory_runtime(settings, store)
        runtime._clients["compatible"] = QwenOCRClient(
            "sk-x", base_url="http://svc", transport=httpx.MockTransport(script)
        )
        processor = ItemProcessor(runtime, sleep=lambda seconds: None)
        processors.append(processor)
        return processor, store, store.pick_for_dispatch(len(sources))

    yield make
    for processor in processors:
        processor.rt.close()


def _attempts(store: Store) -> list[Attempt]:
    with store.sessions() as session:
        return list(session.scalars(select(Attempt).order_by(Attempt.number)))


def test_blips_are_retried_in_process_and_recorded(setup: Make) -> None:
    script = Scripted(
        [
            error(500, "InternalError"),
            error(503, "ServiceUnavailable"),
            httpx.Response(200, json=OK_BODY),
        ]
    )
    processor, store, [item_id] = setup(script, 1)
    assert processor.process(item_id) == Outcome.SUCCEEDED
    assert script.calls == 3
    outcomes = [(a.number, a.outcome, a.http_status) for a in _attempts(store)]
    assert outcomes == [
        (1, AttemptOutcome.RETRY, 500),
        (2, AttemptOutcome.RETRY, 503),
        (3, AttemptOutcome.SUCCEEDED, 200),
    ]


def test_a_long_retry_after_goes_back_to_sql_not_to_sleep(setup: Make) -> None:
    script = Scripted([error(429, "limit_requests", {"Retry-After": "120"})])
    processor, store, [item_id] = setup(script, 1)
    before = utcnow()
    assert processor.process(item_id) == Outcome.RETRY_LATER
    assert script.calls == 1
    with store.sessions() as session:
        item = session.get(Item, item_id)
        assert item is not None
        assert item.state == ItemState.QUEUED and item.dispatched_at is None
        assert item.not_before is not None and item.not_before >= before + timedelta(seconds=120)
        assert item.last_error_code == "limit_requests"
    [attempt] = _attempts(store)
    assert (attempt.outcome, attempt.retry_after) == (AttemptOutcome.RETRY, 120.0)
    # Never sooner than the server asked: not due yet.
    assert store.pick_for_dispatch(5) == []


def test_a_bad_request_fails_the_item_at_once(setup: Make) -> None:
    script = Scripted([error(400, "invalid_parameter_error")])
    processor, store, [item_id] = setup(script, 1)
    assert processor.process(item_id) == Outcome.FAILED
    assert script.calls == 1
    with store.sessions() as session:
        item = session.get(Item, item_id)
        assert item is not None
        assert (item.state, item.last_error_code) == (ItemState.FAILED, "invalid_parameter_error")


def test_attempts_are_bounded(setup: Make, engine: Engine) -> None:
    script = Scripted([error(500, "InternalError")])
    processor, store, [item_id] = setup(script, 1)
    outcomes = []
    for _ in range(3):
        outcomes.append(processor.process(item_id))
        with engine.begin() as conn:  # make the retry due now
            conn.execute(update(Item).where(Item.id == item_id).values(not_before=None))
    # Three quick tries in the first claim, then one more later: QOCR_MAX_ATTEMPTS=4.
    assert outcomes == [Outcome.RETRY_LATER, Outcome.FAILED, Outcome.SKIPPED]
    assert script.calls == 4
    assert len(_attempts(store)) == 4


def test_an_invalid_key_stops_the_batch(setup: Make) -> None:
    script = Scripted([error(401, "invalid_api_key")])
    processor, store, item_ids = setup(script, 3)
    assert processor.process(item_ids[0]) == Outcome.STOPPED
    assert processor.process(item_ids[1]) == Outcome.SKIPPED
    assert script.calls == 1
    batch = store.get_batch(1)
    assert batch is not None and batch.state == BatchState.STOPPED
    assert batch.stop_reason and "invalid_api_key" in batch.stop_reason
    counts = store.counts_by_state(1)
    assert (counts[ItemState.FAILED], counts[ItemState.CANCELLED]) == (1, 2)


def _item(store: Store, item_id: int) -> Item:
    with store.sessions() as session:
        item = session.get(Item, item_id)
        assert item is not None
        return item


def _handed_back(item: Item, not_before: datetime) -> bool:
    """Queued again for the dispatcher, due no sooner than ``not_before``, lease dropped."""
    return (
        item.state == ItemState.QUEUED
        and item.dispatched_at is None
        and item.lease_token is None
        and item.not_before is not None
        and item.not_before >= not_before
    )


def test_no_throttle_slot_hands_the_item_back_without_a_call(setup: Make) -> None:
    script = Scripted([httpx.Response(200, json=OK_BODY)])
    processor, store, [item_id] = setup(script)
    # Another worker's 429 asked every caller to pause a minute: longer than a task waits.
    processor.rt.throttle.penalize(MODEL, retry_after=60.0)
    before = utcnow()
    assert processor.process(item_id) == Outcome.RETRY_LATER
    assert script.calls == 0
    item = _item(store, item_id)
    # Back when the pause ends, not sooner; no call made, so no attempt counted.
    assert _handed_back(item, before + timedelta(seconds=55))
    assert item.not_before is not None and item.not_before <= utcnow() + timedelta(seconds=60)
    assert (item.attempts, _attempts(store)) == (0, [])
    assert store.pick_for_dispatch(5) == []


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
    return port


def test_a_retryable_fetch_failure_hands_the_item_back_for_later(setup: Make) -> None:
    import boto3
    from botocore.config import Config

    script = Scripted([httpx.Response(200, json=OK_BODY)])
    processor, store, [item_id] = setup(script, sources=["s3://scans/a.png"])
    # A real S3 client whose endpoint refuses connections, without botocore's own retries.
    unreachable = boto3.client(
        "s3",
        endpoint_url=f"http://127.0.0.1:{_closed_port()}",
        region_name="us-east-1",
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
        config=Config(retries={"total_max_attempts": 1}, connect_timeout=2),
    )
    processor.rt.__dict__["fetcher"] = ImageFetcher(lambda: unreachable)
    before = utcnow()
    assert processor.process(item_id) == Outcome.RETRY_LATER
    assert script.calls == 0
    item = _item(store, item_id)
    # Back later (the delay has a floor: half of the first back-off), not at once.
    assert _handed_back(item, before + timedelta(seconds=LATER_BASE_SECONDS / 2))
    # Not failed, but counted: an object that never comes back cannot loop forever.
    assert item.attempts == 1
    [attempt] = _attempts(store)
    assert (attempt.outcome, attempt.http_status) == (AttemptOutcome.RETRY, None)
    assert attempt.error_code == item.last_error_code is not None


def test_a_paid_result_is_kept_when_the_lease_moved_on(setup: Make, engine: Engine) -> None:
    script = Scripted([httpx.Response(200, json=OK_BODY)])
    processor, store, [item_id] = setup(script)

    def lease_expires_and_another_worker_claims() -> None:
        # This worker stalled past its lease: the reaper returns the item, another claims it.
        with engine.begin() as conn:
            conn.execute(
                update(Item)
                .where(Item.id == item_id)
                .values(lease_until=utcnow() - timedelta(seconds=1))
            )
        assert store.reap(utcnow(), lost_after=timedelta(minutes=15)).expired_leases == 1
        assert store.claim(item_id, "other-worker", utcnow() + timedelta(minutes=1)) is not None

    script.while_calling = lease_expires_and_another_worker_claims
    assert processor.process(item_id) == Outcome.SUCCEEDED
    assert script.calls == 1
    item = _item(store, item_id)
    # The answer was paid for and the item had not finished: it is kept, and the other
    # worker (which lost its lease to this save) cannot add a second result.
    assert (item.state, item.lease_token) == (ItemState.SUCCEEDED, None)
    with store.sessions() as session:
        assert len(session.scalars(select(Result)).all()) == 1
    outcomes = [attempt.outcome for attempt in _attempts(store)]
    assert outcomes == [AttemptOutcome.SUCCEEDED]


def test_a_result_is_not_kept_when_the_item_finished_elsewhere(setup: Make, engine: Engine) -> None:
    script = Scripted([httpx.Response(200, json=OK_BODY)])
    processor, store, [item_id] = setup(script)

    def another_worker_finishes_it() -> None:
        with engine.begin() as conn:
            conn.execute(
                update(Item)
                .where(Item.id == item_id)
                .values(lease_until=utcnow() - timedelta(seconds=1))
            )
        store.reap(utcnow(), lost_after=timedelta(minutes=15))
        other = store.claim(item_id, "other-worker", utcnow() + timedelta(minutes=1))
        assert other is not None
        now = utcnow()
        done = AttemptRecord(now, now, AttemptOutcome.SUCCEEDED, http_status=200)
        assert store.succeed(other, done, ResultRecord(text="theirs"))

    script.while_calling = another_worker_finishes_it
    assert processor.process(item_id) == Outcome.LEASE_LOST
    with store.sessions() as session:
        assert session.scalars(select(Result.text)).all() == ["theirs"]
    outcomes = [attempt.outcome for attempt in _attempts(store)]
    # This worker's call stays on the record (counted when it left), discarded.
    assert AttemptOutcome.DISCARDED in outcomes


def test_an_unexpected_error_gives_the_item_back_and_is_raised(setup: Make) -> None:
    script = Scripted([RuntimeError("a bug in the middle of an item")])
    processor, store, [item_id] = setup(script)
    before = utcnow()
    with pytest.raises(RuntimeError, match="a bug in the middle"):
        processor.process(item_id)
    assert script.calls == 1  # not retried in-process: only the provider's errors are
    item = _item(store, item_id)
    # Back in the queue for a later try at once, not after the lease and the reaper.
    assert _handed_back(item, before + timedelta(seconds=LATER_BASE_SECONDS))
    assert item.not_before is not None
    assert item.not_before <= utcnow() + timedelta(seconds=LATER_BASE_SECONDS)
    # The call left and was counted; the try is on record as the worker's error.
    assert (item.attempts, item.last_error_code) == (1, "worker_error")
    [attempt] = _attempts(store)
    assert attempt.outcome == AttemptOutcome.RETRY
    assert "a bug in the middle" in (attempt.error_message or "")


def test_the_item_task_runs_with_the_settings_of_its_app(
    engine: Engine,
    database_url: str,
    redis_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    [path] = write_pngs(tmp_path / "img", 1)
    options = RecognizeOptions(model=MODEL, task="text_recognition")
    spec = BatchSpec(name="t", api="compatible", model=MODEL, options=options.to_dict())
    store = Store(engine)
    store.create_batch(spec, [SourceRow(str(path))])
    [item_id] = store.pick_for_dispatch(1)
    # The environment points elsewhere: only the settings given to create_app may count.
    monkeypatch.setenv("QOCR_DATABASE_URL", f"sqlite:///{tmp_path / 'elsewhere.db'}")
    monkeypatch.delenv("DASHSCOPE_API_KEY", raising=False)
    get_settings.cache_clear()
    with running_emulator(recognizer="hash") as emulator:
        settings = load_settings(
            DASHSCOPE_API_KEY="sk-task-settings",
            database_url=database_url,
            broker_url=redis_url,
            base_url=emulator.base_url,
        )
        # A second app in the same process keeps its own settings (and its own tasks).
        with create_app(load_settings(database_url=f"sqlite:///{tmp_path / 'other.db'}")) as other:
            assert other.tasks[ITEM_TASK] is not None
            with create_app(settings) as app:
                assert app.tasks[ITEM_TASK](item_id) == Outcome.SUCCEEDED.value
    get_settings.cache_clear()
    item = _item(store, item_id)
    assert item.state == ItemState.SUCCEEDED
    with store.sessions() as session:
        [result] = session.scalars(select(Result)).all()
    assert result.text == expected_text(path.read_bytes())


def _due_now(engine: Engine, item_id: int) -> None:
    with engine.begin() as conn:
        conn.execute(update(Item).where(Item.id == item_id).values(not_before=None))


def test_an_item_that_keeps_breaking_its_worker_runs_out_of_attempts(
    setup: Make, engine: Engine
) -> None:
    script = Scripted([RuntimeError("the worker breaks on this item")])
    processor, store, [item_id] = setup(script)
    for _ in range(4):  # QOCR_MAX_ATTEMPTS=4
        with pytest.raises(RuntimeError):
            processor.process(item_id)
        _due_now(engine, item_id)
    assert processor.process(item_id) == Outcome.FAILED
    # Every call was counted when it left: never more calls than attempts.
    assert script.calls == 4
    item = _item(store, item_id)
    assert (item.state, item.last_error_code, item.attempts) == (
        ItemState.FAILED,
        "worker_error",
        4,
    )
    assert len(_attempts(store)) == 4


def test_no_call_leaves_once_the_attempts_are_spent_even_mid_retries(
    setup: Make, engine: Engine
) -> None:
    script = Scripted([error(500, "InternalError")])
    processor, store, [item_id] = setup(script)
    with engine.begin() as conn:  # three tries already made by earlier, dead workers
        conn.execute(update(Item).where(Item.id == item_id).values(attempts=3))
    assert processor.process(item_id) == Outcome.FAILED
    assert script.calls == 1
    assert _item(store, item_id).attempts == 4


def test_an_open_circuit_holds_items_without_calls_or_attempts(setup: Make) -> None:
    script = Scripted([error(503, "ServiceUnavailable")])
    processor, store, item_ids = setup(script, 3)
    breaker = processor.rt.breaker
    for _ in range(10):  # the fleet saw mostly failures
        breaker.record(MODEL, CallOutcome.FAILED)
    assert breaker.is_open(MODEL)
    # One probe goes through (and fails); the others wait, with no call and no attempt.
    outcomes = [processor.process(item_id) for item_id in item_ids]
    assert outcomes == [Outcome.RETRY_LATER] * 3
    assert script.calls == 1
    attempts = [_item(store, item_id).attempts for item_id in item_ids]
    assert sorted(attempts) == [0, 0, 1]
    assert all(_item(store, i).not_before is not None for i in item_ids)


def test_a_successful_probe_closes_the_circuit(setup: Make) -> None:
    script = Scripted([httpx.Response(200, json=OK_BODY)])
    processor, _, [item_id] = setup(script)
    for _ in range(10):
        processor.rt.breaker.record(MODEL, CallOutcome.FAILED)
    assert processor.process(item_id) == Outcome.SUCCEEDED
    assert not processor.rt.breaker.is_open(MODEL)


def test_server_errors_wait_with_a_floor_and_a_short_cap() -> None:
    server = ServerError("boom", status=503, code="ServiceUnavailable")
    throttled = RateLimitError("slow", status=429, code="Throttling", retry_after=90)
    for attempt in range(1, 12):
        ceiling = min(SERVER_ERROR_CAP_SECONDS, LATER_BASE_SECONDS * 2 ** (attempt - 1))
        assert ceiling / 2 <= later_seconds(attempt, server) <= ceiling
    assert later_seconds(1, throttled) >= 90  # never sooner than the server asked
