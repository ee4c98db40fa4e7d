"""The result cache in one item's story, on SQLite and PostgreSQL, with a scripted provider.

Real SQL, the real item processor and client; the provider's answers come from an
``httpx.MockTransport`` that counts the calls. Copies are the same bytes under other names.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from sqlalchemy import Engine, select, text, update

from qocr.models import Attempt, Item, ItemState, Result
from qocr.models.base import utcnow
from qocr.models.batch_documents import batch_document
from qocr.models.db import make_engine
from qocr.models.documents import item_json
from qocr.models.records import BatchSpec, SourceRow
from qocr.models.reports import Reports
from qocr.models.result_cache import ResultCacheQueries
from qocr.models.states import AttemptOutcome
from qocr.models.store import Store
from qocr.pricing import price_table
from qocr.qwen.client import QwenOCRClient
from qocr.qwen.options import RecognizeOptions
from qocr.scheduler.cache_policy import CachePolicy
from qocr.settings import load_settings
from qocr.worker.breaker import MemoryKeyValue, RedisKeyValue
from qocr.worker.cache import IN_FLIGHT_PREFIX, RECHECK_SECONDS, SAVED, SAVED_MARK_SECONDS
from qocr.worker.process import ItemProcessor, Outcome
from qocr.worker.runtime import Runtime
from qocr.worker.throttle import MemoryBackend
from tests.support.http_folder import serve_folder
from tests.support.images import png_bytes

MODEL = "qwen-vl-ocr-latest"
KIE = "key_information_extraction"


def answer(text: str, finish_reason: str = "stop", prompt_tokens: int = 700) -> httpx.Response:
    return httpx.Response(
        200,
        json={
            "id": "chatcmpl-1",
            "object": "chat.completion",
            "created": 1,
            "model": MODEL,
            "choices": [
                {
                    "index": 0,
                    "finish_reason": finish_reason,
                    "message": {"role": "assistant", "content": text},
                }
            ],
            "usage": {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": 30,
                "total_tokens": prompt_tokens + 30,
            },
        },
    )


@dataclass
class Provider:
    """Answers every call with ``respond(call number)``; counts the calls."""

    respond: Callable[[int], httpx.Response] = lambda n: answer(f"answer {n}")
    calls: int = 0
    while_calling: Callable[[], None] | None = None

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.calls += 1
        if self.while_calling is not None:
            hook, self.while_calling = self.while_calling, None
            hook()
        return self.respond(self.calls)


class Worker:
    """One worker process's item processor over ``store``, calling ``provider``."""

    def __init__(self, store: Store, provider: Provider, kv: Any = None) -> None:
        settings = load_settings(DASHSCOPE_API_KEY="sk-x", max_attempts=4, base_url="http://svc")
        self.runtime = Runtime(
            settings,
            throttle_backend=MemoryBackend(),
            store=store,
            breaker_kv=kv if kv is not None else MemoryKeyValue(),
        )
        self.runtime._clients["compatible"] = QwenOCRClient(
            "sk-x", base_url="http://svc", transport=httpx.MockTransport(provider)
        )
        self.processor = ItemProcessor(self.runtime, sleep=lambda seconds: None)

    def process(self, item_id: int) -> Outcome:
        return self.processor.process(item_id)


class Setup:
    def __init__(self, engine: Engine, folder: Path) -> None:
        self.engine = engine
        self.store = Store(engine)
        self.folder = folder
        self.provider = Provider()
        self.workers: list[Worker] = []
        self.worker = self.new_worker()

    def new_worker(self, kv: Any = None) -> Worker:
        worker = Worker(self.store, self.provider, kv)
        self.workers.append(worker)
        return worker

    def files(self, name: str, images: list[int]) -> list[str]:
        """One file per image index, named after ``name``: copies share their bytes."""
        paths = []
        for position, index in enumerate(images):
            path = self.folder / f"{name}-{position:03d}.png"
            path.write_bytes(png_bytes(index))
            paths.append(str(path))
        return paths

    def batch(
        self, sources: list[str], cache: CachePolicy | None = None, **options: Any
    ) -> list[int]:
        """A new batch of ``sources``; returns its item ids in source order."""
        recognize = RecognizeOptions(model=options.pop("model", MODEL), **options)
        policy = cache if cache is not None else CachePolicy.for_model(recognize.model)
        spec = BatchSpec(
            name="t",
            api="compatible",
            model=recognize.model,
            task=recognize.task,
            result_schema=recognize.result_schema,
            options=recognize.to_dict(),
            source_options={"s3_mode": "inline", **policy.source_options()},
        )
        batch_id, _ = self.store.create_batch(spec, (SourceRow(s) for s in sources))
        with self.store.sessions() as session:
            return list(
                session.scalars(select(Item.id).where(Item.batch_id == batch_id).order_by(Item.id))
            )

    def run(self, item_ids: list[int]) -> list[Outcome]:
        return [self.worker.process(item_id) for item_id in item_ids]

    def result(self, item_id: int) -> Result:
        with self.store.sessions() as session:
            result = session.get(Result, item_id)
            assert result is not None
            return result

    def item(self, item_id: int) -> Item:
        with self.store.sessions() as session:
            item = session.get(Item, item_id)
            assert item is not None
            return item

    def attempts(self, item_id: int) -> list[Attempt]:
        with self.store.sessions() as session:
            return list(
                session.scalars(
                    select(Attempt).where(Attempt.item_id == item_id).order_by(Attempt.number)
                )
            )

    def make_due(self, item_id: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(update(Item).where(Item.id == item_id).values(not_before=None))


@pytest.fixture
def setup(engine: Engine, tmp_path: Path) -> Iterator[Setup]:
    made = Setup(engine, tmp_path)
    yield made
    for worker in made.workers:
        worker.runtime.close()


def test_images_read_before_under_other_names_are_not_paid_again(setup: Setup) -> None:
    first = setup.batch(setup.files("first", [1, 2]))
    assert setup.run(first) == [Outcome.SUCCEEDED] * 2
    assert setup.provider.calls == 2

    again = setup.batch(setup.files("again", [2, 1]))
    assert setup.run(again) == [Outcome.SUCCEEDED] * 2

    assert setup.provider.calls == 2
    for copy, original in zip(again, reversed(first), strict=True):
        paid, reused = setup.result(original), setup.result(copy)
        assert (reused.text, reused.kv_result, reused.finish_reason) == (
            paid.text,
            paid.kv_result,
            paid.finish_reason,
        )
        assert reused.cached_from == original and paid.cached_from is None
        billed = (reused.input_tokens, reused.output_tokens, reused.total_tokens)
        assert billed == (0, 0, 0)
        assert (reused.original_input_tokens, reused.original_output_tokens) == (700, 30)
        assert reused.original_total_tokens == paid.total_tokens == 730
        [attempt] = setup.attempts(copy)
        assert (attempt.outcome, attempt.called, attempt.number) == (
            AttemptOutcome.CACHED,
            False,
            1,
        )
        assert setup.item(copy).state == ItemState.SUCCEEDED


def test_status_counts_the_cached_items_and_what_they_saved(setup: Setup) -> None:
    setup.run(setup.batch(setup.files("first", [1, 2, 3])))
    again = setup.batch(setup.files("again", [1, 2, 3, 4]))
    setup.run(again)
    prices = price_table("intl")

    document = batch_document(Reports(setup.engine), 2, prices, None)

    assert document is not None
    assert (document["cached"], document["counts"]["succeeded"]) == (3, 4)
    assert document["usage"]["input_tokens"] == 700  # only image 4 was paid for
    saved = document["saved"]
    assert (saved["input_tokens"], saved["output_tokens"]) == (2100, 90)
    assert saved["usd"] == round(prices.price(MODEL).cost(2100, 90), 6) > 0
    assert document["cost"]["usd"] == round(prices.price(MODEL).cost(700, 30), 6)
    rows = {row.id: row for row in Reports(setup.engine).iter_items(2)}
    assert [item_json(rows[i], None)["cached_from"] for i in again] == [1, 2, 3, None]


@pytest.mark.parametrize("kv", ["memory", "redis"])
def test_copies_racing_in_one_batch_pay_once(setup: Setup, redis_url: str, kv: str) -> None:
    holder_id, copy_id = setup.batch(setup.files("twins", [7, 7]))
    # Two workers of one fleet: one process (its memory twin), or two sharing Redis.
    if kv == "redis":
        client = redis.Redis.from_url(redis_url)
        holder = setup.new_worker(RedisKeyValue(client))
        other = setup.new_worker(RedisKeyValue(client))
    else:
        holder = other = setup.worker
    seen: list[Outcome] = []
    before = utcnow()
    setup.provider.while_calling = lambda: seen.append(other.process(copy_id))

    assert holder.process(holder_id) == Outcome.SUCCEEDED

    # The copy came while the holder's call was out: back to the queue, nothing counted.
    assert seen == [Outcome.RETRY_LATER]
    waiting = setup.item(copy_id)
    assert (waiting.state, waiting.attempts, waiting.lease_token) == (ItemState.QUEUED, 0, None)
    assert waiting.not_before is not None
    assert before < waiting.not_before <= utcnow() + timedelta(seconds=RECHECK_SECONDS * 1.25)
    assert setup.attempts(copy_id) == []
    setup.make_due(copy_id)
    assert other.process(copy_id) == Outcome.SUCCEEDED
    assert setup.provider.calls == 1
    assert setup.result(copy_id).cached_from == holder_id
    if kv == "redis":
        # The marker says "saved" for a minute: a copy that missed the result just before
        # it was saved looks again instead of paying.
        client = redis.Redis.from_url(redis_url)
        [marker] = client.keys(f"{IN_FLIGHT_PREFIX}*")
        assert client.get(marker) == SAVED.encode()
        assert 0 < client.pttl(marker) <= SAVED_MARK_SECONDS * 1000


def test_a_copy_that_looked_just_before_the_save_does_not_pay_again(
    setup: Setup, monkeypatch: pytest.MonkeyPatch
) -> None:
    holder_id, copy_id = setup.batch(setup.files("twins", [7, 7]))
    assert setup.worker.process(holder_id) == Outcome.SUCCEEDED
    # The copy's first lookup ran just before the holder's result was saved (it missed);
    # its try for the marker comes after the holder let go of it.
    real_find = ResultCacheQueries.find_paid
    finds: list[str] = []

    def find_paid(self: ResultCacheQueries, *args: Any, **kwargs: Any) -> Any:
        finds.append("find")
        return None if len(finds) == 1 else real_find(self, *args, **kwargs)

    monkeypatch.setattr(ResultCacheQueries, "find_paid", find_paid)
    assert setup.worker.process(copy_id) == Outcome.SUCCEEDED
    assert finds == ["find", "find"]
    assert setup.provider.calls == 1
    assert setup.result(copy_id).cached_from == holder_id


def test_a_miss_costs_one_lookup(setup: Setup, monkeypatch: pytest.MonkeyPatch) -> None:
    real_find = ResultCacheQueries.find_paid
    finds: list[str] = []

    def find_paid(self: ResultCacheQueries, *args: Any, **kwargs: Any) -> Any:
        finds.append("find")
        return real_find(self, *args, **kwargs)

    monkeypatch.setattr(ResultCacheQueries, "find_paid", find_paid)
    assert setup.run(setup.batch(setup.files("alone", [11]))) == [Outcome.SUCCEEDED]
    assert finds == ["find"]
    assert setup.provider.calls == 1


def test_a_holder_that_fails_lets_the_next_copy_call(setup: Setup) -> None:
    holder_id, copy_id = setup.batch(setup.files("twins", [7, 7]))
    setup.provider.respond = lambda n: (
        httpx.Response(400, json={"error": {"code": "invalid_parameter_error", "message": "x"}})
        if n == 1
        else answer("second try")
    )
    assert setup.worker.process(holder_id) == Outcome.FAILED
    assert setup.worker.process(copy_id) == Outcome.SUCCEEDED
    assert setup.provider.calls == 2
    assert setup.result(copy_id).cached_from is None


def test_a_truncated_answer_is_never_reused(setup: Setup) -> None:
    setup.provider.respond = lambda n: answer("cut sho", finish_reason="length")
    setup.run(setup.batch(setup.files("first", [3])))
    again = setup.batch(setup.files("again", [3]))
    assert setup.run(again) == [Outcome.SUCCEEDED]
    assert setup.provider.calls == 2
    assert setup.result(again[0]).cached_from is None


def test_results_older_than_the_batchs_max_age_are_not_reused(setup: Setup) -> None:
    [old] = setup.batch(setup.files("old", [5]))
    setup.run([old])
    with setup.engine.begin() as conn:
        conn.execute(
            update(Result)
            .where(Result.item_id == old)
            .values(created_at=utcnow() - timedelta(days=40))
        )
    # Set explicitly, 60 days reaches back to it; a -latest alias defaults to 30 days.
    [patient] = setup.batch(setup.files("patient", [5]), CachePolicy(max_age_seconds=60 * 86400))
    [default] = setup.batch(setup.files("default", [5]))

    assert setup.run([patient, default]) == [Outcome.SUCCEEDED] * 2

    assert setup.result(patient).cached_from == old
    assert setup.result(default).cached_from is None
    assert setup.provider.calls == 2


def test_no_cache_always_calls_and_its_answer_serves_later_batches(setup: Setup) -> None:
    setup.run(setup.batch(setup.files("first", [4])))
    [fresh] = setup.batch(setup.files("fresh", [4]), CachePolicy(enabled=False))
    setup.run([fresh])
    assert setup.provider.calls == 2
    assert setup.result(fresh).cached_from is None
    [later] = setup.batch(setup.files("later", [4]))
    setup.run([later])
    assert setup.provider.calls == 2
    assert setup.result(later).cached_from == fresh  # the newest paid answer


@pytest.mark.parametrize(
    "changed",
    [
        {"max_pixels": 1_000_000},
        {"min_pixels": 100_000},
        {"task": "table_parsing", "result_schema": None},
        {"model": "qwen-vl-ocr-2025-11-20"},
        {"task": KIE, "result_schema": {"total": "", "number": ""}},
        {"max_tokens": 900},
        {"enable_rotate": True},
        {"seed": 7},
    ],
)
def test_a_request_that_changes_the_answer_misses(setup: Setup, changed: dict[str, Any]) -> None:
    setup.run(setup.batch(setup.files("first", [6]), task=KIE, result_schema={"number": ""}))
    [other] = setup.batch(
        setup.files("other", [6]), **{"task": KIE, "result_schema": {"number": ""}, **changed}
    )
    assert setup.run([other]) == [Outcome.SUCCEEDED]
    assert setup.provider.calls == 2


def test_url_sources_are_reused_only_when_the_batch_opted_in(setup: Setup, tmp_path: Path) -> None:
    www = tmp_path / "www"
    www.mkdir()
    (www / "scan.png").write_bytes(png_bytes(9))
    opted_in = CachePolicy(urls=True)
    with serve_folder(www) as base:
        url = f"{base}/scan.png"
        setup.run(setup.batch([url]))
        setup.run(setup.batch([url]))
        assert setup.provider.calls == 2  # URLs are not cached by default
        [first] = setup.batch([url], opted_in)
        [second] = setup.batch([url], opted_in)
        setup.run([first, second])
        assert setup.provider.calls == 3
        assert setup.result(second).cached_from == first
        # A new version of the file (its Last-Modified moves): not the same image.
        stat = (www / "scan.png").stat()
        os.utime(www / "scan.png", (stat.st_atime, stat.st_mtime + 3600))
        [changed] = setup.batch([url], opted_in)
        setup.run([changed])
        assert setup.provider.calls == 4
        assert setup.result(changed).cached_from is None


def test_the_per_item_lookup_keeps_the_connections_prepared_statements(
    database_url: str,
) -> None:
    # The lookup runs once an item. Ended by the pool's ROLLBACK, it made psycopg drop every
    # statement prepared on the connection (DEALLOCATE ALL), so PostgreSQL parsed and
    # planned the worker's statements again and again; ended by COMMIT, they stay prepared.
    if not database_url.startswith("postgresql"):
        pytest.skip("prepared statements are PostgreSQL's")
    engine = make_engine(database_url, pool_size=1, max_overflow=0)  # one connection
    try:
        lookups = ResultCacheQueries(engine)
        for _ in range(8):  # psycopg prepares a statement on its fifth run
            assert lookups.find_paid("0" * 64, "f" * 64) is None
        with engine.connect() as conn:
            prepared = conn.scalar(text("SELECT count(*) FROM pg_prepared_statements"))
        assert prepared == 1
    finally:
        engine.dispose()
