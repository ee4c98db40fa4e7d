"""Strings of any length reach the store on SQLite and PostgreSQL, messages capped on the way.

A provider may answer with a 300-character error code or request id, a user may submit a
presigned URL of several KB or name a batch after one: none of it may fail the write (on
PostgreSQL a VARCHAR too short, or a btree entry above ~2.7 KB, did). Error messages are
cut to a few KB before they are stored, with a marker that says so.
"""

from __future__ import annotations

import hashlib
from datetime import timedelta

from sqlalchemy import Engine, select

from qocr.models import Attempt, Batch, Item, Result
from qocr.models.base import utcnow
from qocr.models.records import AttemptRecord, BatchSpec, ClaimedItem, ResultRecord, SourceRow
from qocr.models.schedule_run import RunOutcome, ScheduleRunStore
from qocr.models.states import AttemptOutcome, ItemState
from qocr.models.store import Store
from qocr.models.tallies import TallyKind, read_tallies
from qocr.models.text_caps import CODE_MAX_CHARS, MESSAGE_MAX_CHARS

SPEC = BatchSpec(name="t", api="compatible", model="qwen-vl-ocr-latest", options={"model": "m"})
LONG_CODE = "Throttling." + "c" * 289  # 300 characters
LONG_REQUEST_ID = "req-" + "0123456789abcdef" * 18 + "x" * 8  # 300 characters
# A presigned URL of 3 KB: above PostgreSQL's btree entry limit on its own. Its token is
# as incompressible as a real one (PostgreSQL compresses a repetitive key below the limit).
TOKEN = "".join(hashlib.sha256(str(i).encode()).hexdigest() for i in range(47))
LONG_URL = "https://bucket.s3.amazonaws.com/scan.png?X-Amz-Security-Token=" + TOKEN


def _claimed(store: Store, source: str = "/img/a.png") -> ClaimedItem:
    batch_id, _ = store.create_batch(SPEC, [SourceRow(source)])
    [item_id] = store.pick_for_dispatch(1, batch_id=batch_id)
    item = store.claim(item_id, "tok", utcnow() + timedelta(seconds=30))
    assert item is not None
    return item


def _attempt(outcome: AttemptOutcome, code: str | None, message: str | None) -> AttemptRecord:
    now = utcnow()
    return AttemptRecord(
        started_at=now,
        ended_at=now,
        outcome=outcome,
        http_status=500,
        error_code=code,
        error_message=message,
        request_id=LONG_REQUEST_ID,
        worker="w" * 300,
    )


def test_a_300_character_error_code_and_request_id_are_stored(engine: Engine) -> None:
    store = Store(engine)
    item = _claimed(store)
    assert store.record_retry(item, _attempt(AttemptOutcome.RETRY, LONG_CODE, "busy"))
    assert store.fail(item, LONG_CODE, "gave up", _attempt(AttemptOutcome.FAILED, LONG_CODE, "x"))
    with store.sessions() as session:
        attempts = session.scalars(select(Attempt).order_by(Attempt.number)).all()
        row = session.get(Item, item.item_id)
        tallies = read_tallies(session, [item.batch_id])[item.batch_id]
    assert [(a.error_code, a.request_id) for a in attempts] == [(LONG_CODE, LONG_REQUEST_ID)] * 2
    assert row is not None and (row.state, row.last_error_code) == (ItemState.FAILED, LONG_CODE)
    assert tallies[(TallyKind.ERROR, LONG_CODE)] == 1


def test_a_result_with_long_provider_strings_is_stored(engine: Engine) -> None:
    store = Store(engine)
    item = _claimed(store)
    model = "qwen-vl-ocr-" + "m" * 288
    result = ResultRecord(
        text="hello",
        finish_reason="f" * 300,
        request_id=LONG_REQUEST_ID,
        model=model,
        total_tokens=7,
    )
    assert store.succeed(item, _attempt(AttemptOutcome.SUCCEEDED, None, None), result)
    with store.sessions() as session:
        row = session.get(Result, item.item_id)
        tallies = read_tallies(session, [item.batch_id])[item.batch_id]
    assert row is not None
    assert (row.finish_reason, row.request_id, row.model) == ("f" * 300, LONG_REQUEST_ID, model)
    assert tallies[(TallyKind.TOTAL_TOKENS, model)] == 7


def test_a_3kb_url_source_and_a_1000_character_batch_name_make_a_batch(engine: Engine) -> None:
    store = Store(engine)
    name = "n" * 1_000
    rows = [SourceRow(LONG_URL), SourceRow(LONG_URL), SourceRow(LONG_URL + "&v=2")]
    batch_id, count = store.create_batch(
        BatchSpec(name=name, api="compatible", model="m" * 300, options={}), rows
    )
    assert count == 2  # the same URL listed twice is kept once
    ids = store.pick_for_dispatch(5, batch_id=batch_id)
    claimed = store.claim(ids[0], "tok", utcnow() + timedelta(seconds=30))
    assert claimed is not None and claimed.source == LONG_URL
    with store.sessions() as session:
        batch = session.get(Batch, batch_id)
    assert batch is not None and batch.name == name


def test_error_messages_and_codes_are_capped_with_a_marker(engine: Engine) -> None:
    store = Store(engine)
    item = _claimed(store)
    message = "upstream said: " + "e" * 1_000_000
    code = "X" * 10_000
    assert store.fail(item, code, message, _attempt(AttemptOutcome.FAILED, code, message))
    with store.sessions() as session:
        row = session.get(Item, item.item_id)
        attempt = session.scalars(select(Attempt)).one()
        tallies = read_tallies(session, [item.batch_id])[item.batch_id]
    assert row is not None and row.last_error_message is not None and row.last_error_code
    for stored, limit, original in [
        (row.last_error_message, MESSAGE_MAX_CHARS, message),
        (attempt.error_message, MESSAGE_MAX_CHARS, message),
        (row.last_error_code, CODE_MAX_CHARS, code),
        (attempt.error_code, CODE_MAX_CHARS, code),
    ]:
        assert stored is not None and len(stored) == limit
        assert stored.startswith(original[:100])
        assert stored.endswith(f"…[cut from {len(original)} chars]")
    # The item and its tally name the same (capped) code, so `qocr retry --codes` and the
    # summary still agree.
    assert tallies[(TallyKind.ERROR, row.last_error_code)] == 1
    assert store.requeue_failed(item.batch_id, codes=[row.last_error_code]) == 1
    with store.sessions() as session:
        assert (TallyKind.ERROR, row.last_error_code) not in read_tallies(session, [item.batch_id])[
            item.batch_id
        ]


def test_a_stop_reason_and_a_schedule_run_error_are_capped(engine: Engine) -> None:
    store = Store(engine)
    batch_id, _ = store.create_batch(SPEC, [SourceRow("/a.png"), SourceRow("/b.png")])
    assert store.stop_batch(batch_id, "InvalidApiKey: " + "k" * 50_000, "batch_stopped") == 2
    batch = store.get_batch(batch_id)
    assert batch is not None and batch.stop_reason is not None
    assert len(batch.stop_reason) == MESSAGE_MAX_CHARS

    runs = ScheduleRunStore(engine)
    now = utcnow()
    run = runs.start("s" * 1_000, now, "beat", now)
    assert run is not None
    assert runs.finish(
        run, RunOutcome.FAILED, now, error_code=LONG_CODE, error_message="m" * 50_000
    )
    stored = runs.get("s" * 1_000, now)
    assert stored is not None and stored.error_code == LONG_CODE
    assert stored.error_message is not None and len(stored.error_message) == MESSAGE_MAX_CHARS
