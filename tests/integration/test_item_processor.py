"""The decisions of one item's story, against a scripted service (httpx.MockTransport).

Real SQL (SQLite and PostgreSQL), real client; only the service's answers are scripted.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
from sqlalchemy import Engine, select

from qocr.models import Attempt, BatchState, Item, ItemState
from qocr.models.base import utcnow
from qocr.models.states import AttemptOutcome
from qocr.models.store import BatchSpec, SourceRow, Store
from qocr.qwen.client import QwenOCRClient
from qocr.qwen.options import RecognizeOptions
from qocr.settings import load_settings
from qocr.worker.process import ItemProcessor, Outcome
from qocr.worker.runtime import memory_runtime
from tests.support.images import write_pngs

Handler = Callable[[httpx.Request], httpx.Response]

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
    """Answers in order from a list; counts calls."""

    def __init__(self, answers: list[httpx.Response]) -> None:
        self.answers = answers
        self.calls = 0

    def __call__(self, request: httpx.Request) -> httpx.Response:
        answer = self.answers[min(self.calls, len(self.answers) - 1)]
        self.calls += 1
        return answer


@pytest.fixture
def setup(
    engine: Engine, tmp_path: Path
) -> Iterator[Callable[[Scripted, int], tuple[ItemProcessor, Store, list[int]]]]:
    processors: list[ItemProcessor] = []

    def make(script: Scripted, items: int = 1) -> tuple[ItemProcessor, Store, list[int]]:
        settings = load_settings(DASHSCOPE_API_KEY="sk-x", max_attempts=4, base_url="http://svc")
        store = Store(engine)
        paths = write_pngs(tmp_path / "img", items)
        options = RecognizeOptions(model="qwen-vl-ocr-latest")
        spec = BatchSpec(name="t", api="compatible", model=options.model, options=options.to_dict())
        store.create_batch(spec, (SourceRow(str(p)) for p in paths))
        runtime = memory_runtime(settings, store)
        runtime._clients["compatible"] = QwenOCRClient(
            "sk-x", base_url="http://svc", transport=httpx.MockTransport(script)
        )
        processor = ItemProcessor(runtime, sleep=lambda seconds: None)
        processors.append(processor)
        return processor, store, store.pick_for_dispatch(items)

    yield make
    for processor in processors:
        processor.rt.close()


def _attempts(store: Store) -> list[Attempt]:
    with store.sessions() as session:
        return list(session.scalars(select(Attempt).order_by(Attempt.number)))


def test_blips_are_retried_in_process_and_recorded(setup) -> None:  # type: ignore[no-untyped-def]
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


def test_a_long_retry_after_goes_back_to_sql_not_to_sleep(setup) -> None:  # type: ignore[no-untyped-def]
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


def test_a_bad_request_fails_the_item_at_once(setup) -> None:  # type: ignore[no-untyped-def]
    script = Scripted([error(400, "invalid_parameter_error")])
    processor, store, [item_id] = setup(script, 1)
    assert processor.process(item_id) == Outcome.FAILED
    assert script.calls == 1
    with store.sessions() as session:
        item = session.get(Item, item_id)
        assert item is not None
        assert (item.state, item.last_error_code) == (ItemState.FAILED, "invalid_parameter_error")


def test_attempts_are_bounded(setup) -> None:  # type: ignore[no-untyped-def]
    script = Scripted([error(500, "InternalError")])
    processor, store, [item_id] = setup(script, 1)
    outcomes = []
    for _ in range(3):
        outcomes.append(processor.process(item_id))
        with store.sessions.begin() as session:  # make the retry due now
            session.get(Item, item_id).not_before = None  # type: ignore[union-attr]
    # Three quick tries in the first claim, then one more later: QOCR_MAX_ATTEMPTS=4.
    assert outcomes == [Outcome.RETRY_LATER, Outcome.FAILED, Outcome.SKIPPED]
    assert script.calls == 4
    assert len(_attempts(store)) == 4


def test_an_invalid_key_stops_the_batch(setup) -> None:  # type: ignore[no-untyped-def]
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
